"""--shard I/N and caikit merge: shards partition the input, and merged shards equal one whole run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from caikit.cli import app
from caikit.records import Shard, content_id

QUESTIONS = [f"Question {i}: how do I do thing number {i}?" for i in range(10)]


def caikit(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def close(a, b, tol=1e-4) -> bool:
    """Equal, floats within `tol` (scores of a batch differ from one prompt's in the last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    return a == b


def comparable(records):
    """Records by id without the run-specific parts of provenance (time, shard)."""
    out = {}
    for r in records:
        info = {k: v for k, v in r["caikit"].items() if k not in ("created", "shard")}
        out[r["id"]] = {**r, "caikit": info}
    return out


def test_shards_partition_the_ids():
    ids = [content_id(i) for i in range(300)]
    shards = [[i for i in ids if Shard(k, 3).holds(i)] for k in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(ids)
    assert all(40 < len(s) < 160 for s in shards), [len(s) for s in shards]


@pytest.mark.parametrize("value", ["0/3", "4/3", "a/b", "3"])
def test_bad_shard_values(value, tmp_path):
    code, out, err = caikit("redteam", "-i", tmp_path / "x.jsonl", "--shard", value)
    assert code == 2 and err.count("\n") == 1 and f"--shard {value}" in err, err


def test_sharded_redteam_revise_label_merge_into_the_whole_run(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    common = ["--model", tiny_model, "--max-new-tokens", 6, "--quiet"]
    assert caikit("redteam", "-i", prompts, "-o", tmp_path / "redteam.jsonl", *common)[0] == 0
    assert caikit("revise", "-i", tmp_path / "redteam.jsonl", "-o", tmp_path / "revise.jsonl", "--rounds", 1, *common)[0] == 0
    labelling = ["--policy", tiny_model, "--feedback-model", tiny_model, "--max-new-tokens", 4, "--quiet"]
    assert caikit("label", "-i", prompts, "-o", tmp_path / "label.jsonl", *labelling)[0] == 0
    stages = {"redteam": prompts, "revise": tmp_path / "redteam.jsonl", "label": prompts}
    for stage, source in stages.items():
        parts = []
        for k in (1, 2, 3):
            part = tmp_path / f"{stage}.{k}-of-3.jsonl"
            extra = labelling if stage == "label" else common + (["--rounds", 1] if stage == "revise" else [])
            code, _, err = caikit(stage, "-i", source, "-o", part, "--shard", f"{k}/3", *extra)
            assert code == 0, err
            parts.append(part)
        assert sum(len(rows(p)) for p in parts) == len(rows(tmp_path / f"{stage}.jsonl")), "no record in two shards"
        code, _, err = caikit("merge", *parts, "-o", tmp_path / f"{stage}.merged.jsonl")
        assert code == 0, err
        merged = rows(tmp_path / f"{stage}.merged.jsonl")
        assert close(comparable(merged), comparable(rows(tmp_path / f"{stage}.jsonl"))), stage
        positions = [r["caikit"]["shard"]["position"] for r in merged]
        assert positions == sorted(positions), "merged records come in input order"


def test_merge_reports_missing_shards_conflicts_and_settings(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    for k in (1, 2):
        assert caikit("redteam", "-i", prompts, "-o", tmp_path / f"{k}.jsonl", "--shard", f"{k}/3", "--model", tiny_model,
                      "--max-new-tokens", 4, "--quiet")[0] == 0
    code, out, err = caikit("merge", tmp_path / "1.jsonl", tmp_path / "2.jsonl", tmp_path / "1.jsonl")
    assert code == 0 and "shards 3 of 3 are missing" in err
    assert len(out.splitlines()) == len(rows(tmp_path / "1.jsonl")) + len(rows(tmp_path / "2.jsonl")), "exact copies are dropped"
    changed = rows(tmp_path / "1.jsonl")
    changed[0]["completion"][0]["content"] += " (edited)"
    changed[0]["caikit"]["seed"] = 99
    (tmp_path / "edited.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    code, out, err = caikit("merge", tmp_path / "1.jsonl", tmp_path / "edited.jsonl")
    assert code == 0 and "1 ids appear with different contents" in err and "different settings" in err
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n{"no id": 1}\n')
    code, out, err = caikit("merge", tmp_path / "bad.jsonl", "-o", tmp_path / "out.jsonl")
    assert code == 2 and err.count("\n") == 1 and "bad.jsonl:2" in err and not (tmp_path / "out.jsonl").exists()


def test_eval_compare_answers_by_shard_then_judges_the_merge(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS[:6]))
    out = tmp_path / "eval"
    args = ["eval", "compare", "--model", f"a={tiny_model}", "--model", f"b={tiny_model}@1.0", "--red-team", prompts,
            "--judge", tiny_model, "--max-new-tokens", 4, "-o", out, "--quiet"]
    for k in (1, 2):
        code, _, err = caikit(*args, "--shard", f"{k}/2")
        assert code == 0, err
    assert not (out / "results.json").exists(), "a shard answers; it does not judge"
    for name in ("a", "b"):
        parts = sorted((out / "responses").glob(f"{name}.harmlessness.*-of-2.jsonl"))
        assert len(parts) == 2
        assert caikit("merge", *parts, "-o", out / "responses" / f"{name}.harmlessness.jsonl", "--quiet")[0] == 0
    merged = (out / "responses" / "a.harmlessness.jsonl").read_text()
    code, stdout, err = caikit(*args, "--resume", "--json")
    assert code == 0, err
    assert json.loads(stdout)["sets"] == {"harmlessness": 6}
    assert (out / "responses" / "a.harmlessness.jsonl").read_text() == merged, "the merged answers were used, not regenerated"


@pytest.mark.slow
def test_the_slurm_example_runs_as_an_array_and_merges(tiny_model, tmp_path):
    """examples/scale/label_shards.sbatch, run as two array tasks would run it, then the merge."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": q, "chosen": "Sure.", "rejected": f"No {i}."}) + "\n" for i, q in enumerate(QUESTIONS)))
    script = Path(__file__).resolve().parents[1] / "examples" / "scale" / "label_shards.sbatch"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "INPUT": str(pairs),
           "OUT": str(tmp_path / "labels"), "FEEDBACK": str(tiny_model), "SLURM_ARRAY_TASK_COUNT": "2"}
    for task in ("1", "2"):
        done = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": task}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    code, _, err = caikit("merge", tmp_path / "labels.1-of-2.jsonl", tmp_path / "labels.2-of-2.jsonl", "-o", tmp_path / "labels.jsonl")
    assert code == 0 and "missing" not in err, err
    positions = [r["caikit"]["shard"]["position"] for r in rows(tmp_path / "labels.jsonl")]
    assert positions == list(range(len(QUESTIONS))), "every pair once, in input order"
