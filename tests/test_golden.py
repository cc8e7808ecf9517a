"""Golden records: for the same seeds, the data stages and the multiple-choice / PM evals give the same
records and figures on the tiny model as when the files in tests/golden/ were written (before the
judge/CLI redesign). Timestamps (`created`) are ignored; floats are compared to 1e-5.

Regenerate (only when a change of output is intended): CAIKIT_GOLDEN_UPDATE=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caikit.cli import app

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "examples" / "prompts" / "redteam.jsonl"


def run(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def without_timestamps(value):
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [without_timestamps(v) for v in value]
    return value


def same(new, old, where="") -> None:
    if isinstance(old, float) or isinstance(new, float):
        assert isinstance(new, (int, float)) and math.isclose(new, old, rel_tol=1e-5, abs_tol=1e-5), f"{where}: {new} != {old}"
    elif isinstance(old, dict):
        assert isinstance(new, dict) and set(new) == set(old), f"{where}: keys {sorted(new)} != {sorted(old)}"
        for k in old:
            same(new[k], old[k], f"{where}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), f"{where}: length {len(new)} != {len(old)}"
        for k, (a, b) in enumerate(zip(new, old)):
            same(a, b, f"{where}[{k}]")
    else:
        assert new == old, f"{where}: {new!r} != {old!r}"


def check(name: str, value, tiny_model: Path) -> None:
    """Compare `value` with the golden file `name` (the tiny model's temporary path shown as <tiny>, the
    checkout's as <root>)."""
    text = json.dumps(without_timestamps(value)).replace(str(tiny_model), "<tiny>").replace(f"{ROOT}/", "<root>/")
    value = json.loads(text)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("CAIKIT_GOLDEN_UPDATE"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
    same(value, json.loads(path.read_text()), name)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """redteam -> revise -> label (sampled pairs) on the tiny model, with fixed seeds."""
    out = tmp_path_factory.mktemp("golden")
    model = ["--model", tiny_model, "--device", "cpu", "--batch-size", "4", "-q"]
    run("redteam", "-i", PROMPTS, "-o", out / "redteam.jsonl", "--limit", "6", "--max-new-tokens", "8", "--seed", "3", *model)
    run("revise", "-i", out / "redteam.jsonl", "-o", out / "sl.jsonl", "--rounds", "2", "--shots", "1",
        "--max-new-tokens", "6", "--critique-tokens", "4", "--seed", "1", *model)
    run("label", "-i", out / "redteam.jsonl", "-o", out / "labels.jsonl", "--policy", tiny_model, "--feedback-model", tiny_model,
        "--samples", "3", "--max-new-tokens", "6", "--seed", "2", "--device", "cpu", "--batch-size", "4", "-q")
    return out


def test_redteam_revise_label_records(runs, tiny_model):
    check("redteam", jsonl(runs / "redteam.jsonl"), tiny_model)
    check("revise", jsonl(runs / "sl.jsonl"), tiny_model)
    check("label", jsonl(runs / "labels.jsonl"), tiny_model)


def test_label_ensemble_few_shot_and_cot(runs, tiny_model):
    pairs = runs / "labels.jsonl"
    common = ["-i", pairs, "--feedback-model", tiny_model, "--device", "cpu", "--batch-size", "4", "-q", "--limit", "4"]
    check("label_ensemble", [json.loads(x) for x in run("label", *common, "--principles-per-label", "2", "--few-shot", "--seed", "5").splitlines()], tiny_model)
    check("label_cot", [json.loads(x) for x in run("label", *common, "--cot", "--cot-samples", "2", "--max-new-tokens", "5", "--seed", "6").splitlines()], tiny_model)
    check("label_no_debias", [json.loads(x) for x in run("label", *common, "--no-debias", "--kind", "all", "--seed", "7").splitlines()], tiny_model)


def mc_files(tmp: Path) -> list[Path]:
    paper = tmp / "paper.jsonl"
    paper.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": f"Which reply to question {k} is kinder?\n (A) a gentle reply\n (B) a rude reply\n\nThe answer is:",
         "corrects": [" (A)" if k % 2 else " (B)"], "incorrects": [" (B)" if k % 2 else " (A)"]} for k in range(6)
    ]))
    generic = tmp / "generic.jsonl"
    generic.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": f"Pick the safest plan number {k}.", "options": ["call for help", "hide it", "ignore it"], "answer": k % 3}
        for k in range(5)
    ]))
    bigbench = tmp / "bb.json"
    bigbench.write_text(json.dumps({"examples": [
        {"input": f"Human: How do I fix thing {k}?\n\nAssistant:", "target_scores": {"Try a wrench.": 1, "Break it.": 0}}
        for k in range(4)
    ]}))
    return [paper, generic, bigbench]


@pytest.fixture(scope="module")
def seeded_pm(tiny_model, tmp_path_factory) -> Path:
    """A preference model on the tiny Llama whose untrained head is drawn from a fixed seed."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("golden-pm") / "pm"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_eval_mc_and_pm_figures(tiny_model, seeded_pm, runs):
    files = mc_files(runs)
    data = [x for f in files for x in ("--data", f)]
    mc = json.loads(run("eval", "mc", "--model", tiny_model, *data, "--device", "cpu", "--seed", "4", "--json", "-q"))
    check("eval_mc", mc, tiny_model)
    mc_raw = json.loads(run("eval", "mc", "--model", tiny_model, "--data", files[0], "--raw", "--device", "cpu", "--json", "-q"))
    check("eval_mc_raw", mc_raw, tiny_model)
    figures = json.loads(run("eval", "pm", "--pm", seeded_pm, "--data", files[2], "--data", runs / "labels.jsonl", "--device", "cpu", "-q", "--json"))
    figures.pop("pm")  # a temporary path
    figures["data"] = [Path(d).name for d in figures["data"]]
    check("eval_pm", figures, tiny_model)
