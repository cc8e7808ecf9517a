"""Write the records and figures that tests/test_golden.py compares with tests/golden/, as one JSON
object {name: value}: redteam -> revise -> label (sampled pairs) on the tiny model, label's ensemble,
few-shot, chain-of-thought and no-debias variants, and the multiple-choice and PM evals, all seeded.

test_golden.py runs this in a subprocess under portable numerics (see PORTABLE_NUMERICS there), so that
the same records come out on every x86-64 CPU. By hand: python tests/golden_records.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "examples" / "prompts" / "redteam.jsonl"


def run(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines()]


def data_stages(tiny: Path, out: Path) -> dict:
    model = ["--model", tiny, "--device", "cpu", "--batch-size", "4", "-q"]
    run("redteam", "-i", PROMPTS, "-o", out / "redteam.jsonl", "--limit", "6", "--max-new-tokens", "8", "--seed", "3", *model)
    run("revise", "-i", out / "redteam.jsonl", "-o", out / "sl.jsonl", "--rounds", "2", "--shots", "1",
        "--max-new-tokens", "6", "--critique-tokens", "4", "--seed", "1", *model)
    run("label", "-i", out / "redteam.jsonl", "-o", out / "labels.jsonl", "--policy", tiny, "--feedback-model", tiny,
        "--samples", "3", "--max-new-tokens", "6", "--seed", "2", "--device", "cpu", "--batch-size", "4", "-q")
    common = ["-i", out / "labels.jsonl", "--feedback-model", tiny, "--device", "cpu", "--batch-size", "4", "-q", "--limit", "4"]
    return {
        "redteam": jsonl(out / "redteam.jsonl"),
        "revise": jsonl(out / "sl.jsonl"),
        "label": jsonl(out / "labels.jsonl"),
        "label_ensemble": lines(run("label", *common, "--principles-per-label", "2", "--few-shot", "--seed", "5")),
        "label_cot": lines(run("label", *common, "--cot", "--cot-samples", "2", "--max-new-tokens", "5", "--seed", "6")),
        "label_no_debias": lines(run("label", *common, "--no-debias", "--kind", "all", "--seed", "7")),
    }


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


def seeded_pm(tiny: Path, out: Path) -> Path:
    """A preference model on the tiny Llama whose untrained head is drawn from a fixed seed."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def evals(tiny: Path, out: Path) -> dict:
    files = mc_files(out)
    data = [x for f in files for x in ("--data", f)]
    pm = seeded_pm(tiny, out / "pm")
    figures = json.loads(run("eval", "pm", "--pm", pm, "--data", files[2], "--data", out / "labels.jsonl", "--device", "cpu", "-q", "--json"))
    figures.pop("pm")  # a temporary path
    figures["data"] = [Path(d).name for d in figures["data"]]
    return {
        "eval_mc": json.loads(run("eval", "mc", "--model", tiny, *data, "--device", "cpu", "--seed", "4", "--json", "-q")),
        "eval_mc_raw": json.loads(run("eval", "mc", "--model", tiny, "--data", files[0], "--raw", "--device", "cpu", "--json", "-q")),
        "eval_pm": figures,
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["CAIKIT_HOME"] = str(out / "caikit-home")
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import build_tiny_model
    from caikit.cli import app

    tiny = build_tiny_model(out / "tiny")
    records = {**data_stages(tiny, out), **evals(tiny, out)}
    import torch

    records["numerics"] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    (out / "records.json").write_text(json.dumps({"tiny": str(tiny), "records": records}))
