"""With HF_HUB_OFFLINE=1 caikit opens no network connection: sockets are blocked and stages still run
(or refuse a hub id in one line), and nothing is unpickled or run from a model's own code."""

import json
import socket

import pytest
from typer.testing import CliRunner

from caikit.cli import app


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return attempts


def test_a_stage_runs_with_sockets_blocked(no_network, tiny_model, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I open a stuck jar?\n")
    result = CliRunner().invoke(app, ["redteam", "-i", str(prompts), "-o", str(tmp_path / "out.jsonl"), "--model", str(tiny_model),
                                      "--max-new-tokens", "4", "-q"])
    assert result.exit_code == 0, result.stderr
    assert no_network == []


def test_a_hub_id_is_refused_offline_without_a_connection(no_network, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello?\n")
    result = CliRunner().invoke(app, ["redteam", "-i", str(prompts), "-o", str(tmp_path / "out.jsonl"), "--model", "some-org/some-model"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "some-org/some-model" in result.stderr
    assert no_network == []
    assert not (tmp_path / "out.jsonl").exists()


def test_remote_code_is_never_trusted(tiny_model, tmp_path):
    """A model dir whose config asks for its own Python code (auto_map) is loaded without running it."""
    import json
    import shutil

    from caikit import models

    model = tmp_path / "custom"
    shutil.copytree(tiny_model, model)
    (model / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilForCausalLM", "AutoConfig": "evil.EvilConfig"}
    (model / "config.json").write_text(json.dumps(config))
    loaded = models.load(str(model), device="cpu")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"


def test_pickle_weights_load_only_with_allow_pickle(tiny_model, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(str(tiny_model / "model.safetensors")), pickled / "pytorch_model.bin")
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I open a stuck jar?\nName a red fruit.\n")
    runner = CliRunner()

    def redteam(model, out, *extra):
        return runner.invoke(app, ["redteam", "-i", str(prompts), "-o", str(tmp_path / out), "--model", str(model),
                                   "--max-new-tokens", "6", "--temperature", "0", "-q", *extra])

    assert redteam(tiny_model, "safe.jsonl").exit_code == 0
    allowed = redteam(pickled, "pickled.jsonl", "--allow-pickle")
    assert allowed.exit_code == 0, allowed.stderr

    def completions(name):
        return [json.loads(line)["completion"] for line in (tmp_path / name).read_text().splitlines()]

    assert len(completions("safe.jsonl")) == 2
    assert completions("pickled.jsonl") == completions("safe.jsonl")  # the same weights, read from the pickle
    refused = redteam(pickled, "again.jsonl")  # the permission lasts one command line, not the process
    assert refused.exit_code == 2 and "--allow-pickle" in refused.stderr
    # a training option group has the flag too; what it saves is safetensors
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": "Hi?", "chosen": f"Hello {i}.", "rejected": "Go away."}) + "\n" for i in range(4)))
    trained = runner.invoke(app, ["train-pm", "-i", str(pairs), "--base-model", str(pickled), "-o", str(tmp_path / "pm"),
                                  "--max-steps", "1", "--device", "cpu", "--allow-pickle", "-q"])
    assert trained.exit_code == 0, trained.stderr
    assert (tmp_path / "pm" / "model.safetensors").is_file()
