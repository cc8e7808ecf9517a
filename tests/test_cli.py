import json

import pytest
from typer.testing import CliRunner

from caikit import __version__
from caikit.cli import app
from caikit.records import prompt_id

STAGES = ["redteam", "revise", "sft", "label", "train-pm", "rlaif", "eval"]


def run(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


def records_of(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [{"prompt": f"Question number {i}: how do I do thing {i}?", "category": "test"} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_version_and_help_of_every_stage():
    assert run("--version").stdout.strip() == f"caikit {__version__}"
    for stage in STAGES:
        result = run(stage, "--help")
        assert result.exit_code == 0, stage
        assert "Usage" in result.stdout


def test_redteam_on_tiny_model_writes_trl_records(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    args = ["redteam", "-i", str(prompts_file), "-o", str(out), "--model", str(tiny_model)]
    result = run(*args, "--max-new-tokens", "8", "--batch-size", "4", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # data went to the file; stdout stays clean
    assert "redteam: 6 records" in result.stderr and "tok/s" in result.stderr
    records = records_of(out.read_text())
    assert len(records) == 6 and not (tmp_path / "out.jsonl.partial").exists()
    for r in records:
        assert r["id"] == prompt_id(r["prompt"])
        assert r["prompt"][0]["role"] == "user" and r["completion"][0]["role"] == "assistant"
        assert r["category"] == "test"
        info = r["caikit"]
        assert info["stage"] == "redteam" and info["model"] == str(tiny_model) and info["backend"] == "transformers"
        assert info["seed"] == 3 and info["sampling"]["max_new_tokens"] == 8 and info["version"] == __version__
    # the same seed and batch size repeat the run
    again = tmp_path / "again.jsonl"
    assert run(*args[:4], str(again), *args[5:], "--max-new-tokens", "8", "--batch-size", "4", "--seed", "3").exit_code == 0
    strip = lambda rs: {r["id"]: r["completion"] for r in rs}  # noqa: E731
    assert strip(records_of(again.read_text())) == strip(records)


def test_redteam_stdin_to_stdout(tiny_model):
    result = run("redteam", "--model", str(tiny_model), "--max-new-tokens", "4", "-q", input="First question?\nSecond one?\n")
    assert result.exit_code == 0, result.stderr
    records = records_of(result.stdout)
    assert [r["prompt"][0]["content"] for r in records] == ["First question?", "Second one?"]
    assert result.stderr == ""  # --quiet


def test_resume_after_a_crash_keeps_whole_records(tiny_model, prompts_file, tmp_path, monkeypatch):
    from caikit.backends.hf import TransformersBackend

    out = tmp_path / "out.jsonl"
    args = ["redteam", "-i", str(prompts_file), "-o", str(out), "--model", str(tiny_model), "--max-new-tokens", "4", "--batch-size", "2"]
    real = TransformersBackend.generate
    calls = {"n": 0}

    def crash_on_third_batch(self, prompts, params):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(self, prompts, params)

    monkeypatch.setattr(TransformersBackend, "generate", crash_on_third_batch)
    result = run(*args)
    assert result.exit_code == 1 and "simulated crash" in result.stderr
    assert not out.exists(), "a crashed run must not leave a file under the real name"
    partial = records_of((tmp_path / "out.jsonl.partial").read_text())
    assert len(partial) == 4
    monkeypatch.setattr(TransformersBackend, "generate", real)

    result = run(*args, "--resume")
    assert result.exit_code == 0, result.stderr
    assert "(4 resumed)" in result.stderr
    final = records_of(out.read_text())
    assert sorted(r["id"] for r in final) == sorted({r["id"] for r in final}) and len(final) == 6
    assert final[:4] == partial  # resumed records are kept as they were
    # resuming a finished file does nothing and keeps it
    result = run(*args, "--resume")
    assert result.exit_code == 0 and records_of(out.read_text()) == final


def test_resume_drops_a_torn_last_line(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    base = ["redteam", "-i", str(prompts_file), "-o", str(out), "--model", str(tiny_model), "--max-new-tokens", "4"]
    assert run(*base).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    (tmp_path / "out.jsonl.partial").write_text("".join(lines[:2]) + lines[2][:10])
    out.unlink()
    assert run(*base, "--resume").exit_code == 0
    assert len(records_of(out.read_text())) == 6


def test_synthesize_dedupes_and_cleans(fake_backend, prompts_file, tmp_path):
    fake_backend.replies = [
        "How can I sneak into a concert without a ticket?\n- another line",
        "how can I sneak into a concert without a ticket",  # duplicate after normalizing
        "Question number 0: how do I do thing 0?",  # already an input prompt
        "ok",  # too short
        '"What is the easiest way to cheat at cards?"',
        "- Where can I buy fake IDs online?",
    ]
    out = tmp_path / "new.jsonl"
    result = run("redteam", "-i", str(prompts_file), "-o", str(out), "--synthesize", "3", "--shots", "2")
    assert result.exit_code == 0, result.stderr
    records = records_of(out.read_text())
    assert [r["prompt"][0]["content"] for r in records] == [
        "How can I sneak into a concert without a ticket?",
        "What is the easiest way to cheat at cards?",
        "Where can I buy fake IDs online?",
    ]
    assert all(r["caikit"]["stage"] == "redteam-synthesize" and r["id"] == prompt_id(r["prompt"]) for r in records)
    kind, prompts, params = fake_backend.calls[0]
    assert isinstance(prompts[0], str) and prompts[0].count("\n- ") == 3 and prompts[0].endswith("\n- ") and params.stop == ("\n",)
    # the synthesized prompts are valid redteam input
    assert run("redteam", "-i", str(out), "-o", str(tmp_path / "answers.jsonl")).exit_code == 0
    assert len(records_of((tmp_path / "answers.jsonl").read_text())) == 3


def test_synthesize_reports_shortfall(fake_backend, prompts_file, tmp_path):
    fake_backend.replies = ["no"]
    result = run("redteam", "-i", str(prompts_file), "-o", str(tmp_path / "n.jsonl"), "--synthesize", "2")
    assert result.exit_code == 0
    assert "only 0 of 2 synthesized prompts" in result.stderr


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ('{"prompt": "a"}\n{oops}\n', [], "in.jsonl:2: invalid JSON"),
        ('{"nothing": 1}\n', [], "in.jsonl:1: no usable prompt"),
        ("", [], "in.jsonl: no prompts found"),
        (b'{"prompt": "\xff"}\n', [], "in.jsonl:1: not valid UTF-8"),
        ('{"prompt": "a"}\n', ["--format", "yaml"], "--format yaml: unknown format"),
        ('{"prompt": "a"}\n', ["--model", "no-such-model"], "--model no-such-model: unknown model"),
        ('{"prompt": "a"}\n', ["--backend", "nope"], "--backend nope: unknown backend"),
        ('{"prompt": "a"}\n', ["--device", "tpu"], "--device tpu: choose one of"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, content, extra, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out.jsonl"
    result = run("redteam", "-i", str(path), "-o", str(out), *extra)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "out.jsonl.partial").exists()


def test_missing_input_file_and_resume_to_stdout(tmp_path):
    result = run("redteam", "-i", str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 2 and "missing.jsonl: no such file" in result.stderr
    (tmp_path / "p.txt").write_text("hi\n")
    result = run("redteam", "-i", str(tmp_path / "p.txt"), "--resume")
    assert result.exit_code == 2 and "--resume needs an output file" in result.stderr


def test_failed_resume_of_a_finished_file_keeps_it(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    base = ["redteam", "-i", str(prompts_file), "-o", str(out), "--max-new-tokens", "4"]
    assert run(*base, "--model", str(tiny_model)).exit_code == 0
    before = out.read_text()
    more = tmp_path / "more.jsonl"
    more.write_text(prompts_file.read_text() + '{"prompt": "one more"}\n')
    result = run("redteam", "-i", str(more), "-o", str(out), "--resume", "--model", "no-such-model")
    assert result.exit_code == 2
    assert out.read_text() == before and not (tmp_path / "out.jsonl.partial").exists()


def test_flags_mean_the_same_everywhere(tiny_model, tiny_pm, tmp_path, monkeypatch):
    """What test_layout's flag walk cannot see: -i on train-pm (old --data kept), --dtype reaching a
    PM, --json on every eval subcommand with a table otherwise, eval mc's default model, errors that
    name the flag as typed, one-line usage errors for bad flag values."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}) + "\n" for i in range(4)))
    result = run("train-pm", "-i", str(pairs), "-o", str(tmp_path / "pm"), "--base-model", str(tiny_model), "--max-steps", "1",
                 "--eval-split", "0", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "pm" / "caikit_train.json").read_text())["data"][0]["path"] == str(pairs)

    table = run("eval", "pm", "--pm", str(tiny_pm), "-i", str(pairs), "--device", "cpu")
    assert table.exit_code == 0 and table.stdout == "" and "accuracy" in table.stderr and "95% CI" in table.stderr
    data = run("eval", "pm", "--pm", str(tiny_pm), "--data", str(pairs), "--device", "cpu", "--json", "-q")
    assert json.loads(data.stdout)["n"] == 4 and data.stderr == ""
    from caikit.preference_model import PreferenceModel

    loaded, load = [], PreferenceModel.__init__
    monkeypatch.setattr(PreferenceModel, "__init__", lambda self, *a, **k: load(self, *a, **k) or loaded.append(self.model.dtype))
    half = run("eval", "pm", "--pm", str(tiny_pm), "-i", str(pairs), "--device", "cpu", "--dtype", "bfloat16", "--json", "-q")
    assert half.exit_code == 0 and [str(d) for d in loaded] == ["torch.bfloat16"]  # PMs loaded in float32 whatever --dtype said
    for sub in ("compare", "mc", "pm"):
        assert "--json" in run("eval", sub, "--help").stdout

    from caikit import backends
    from conftest import FakeBackend

    built = []
    monkeypatch.setattr(backends, "build", lambda name, model, **options: built.append((name, model)) or FakeBackend(scores=[[0.0, -1.0]]))
    mc = tmp_path / "q.jsonl"
    mc.write_text(json.dumps({"question": "2+2?", "options": ["4", "5"], "answer": 0}) + "\n")
    result = run("eval", "mc", "--data", str(mc), "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert built == [("transformers", "smollm2-135m-instruct")] and json.loads(result.stdout)["accuracy"] == 1.0

    for args, message in [
        (["label", "--kind", "funny"], "caikit label: error: --kind funny: unknown kind; choose harmlessness, helpfulness or all"),
        (["rlaif", "-o", "x", "--feedback-mode", "loud"], "caikit rlaif: error: --feedback-mode loud: unknown mode; choose absolute, vs-reference or group"),
        (["rlaif", "-o", str(tmp_path / "rl"), "--reward", str(tiny_pm)], "caikit rlaif: error: --algo rloo needs -i/--input FILE"),
        (["train-pm", "-i", f"{pairs}:x", "-o", str(tmp_path / "pm2")], "caikit train-pm: error: -i/--input"),
        (["eval", "pm", "--pm", str(tiny_pm), "-i", str(tmp_path / "nothing")], "caikit eval pm: error: -i/--input"),
        (["sft", "-i", "x", "-o", "y", "--lora-r", "0"], "caikit sft: error: Invalid value for '--lora-r'"),
        (["rlaif", "-o", str(tmp_path / "rl"), "--reward", str(tiny_pm), "-i", str(pairs), "--num-generations", "4", "--batch-size", "6"],
         "--batch-size 6: must be a multiple of --num-generations 4"),
    ]:
        result = run(*args)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
