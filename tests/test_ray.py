"""examples/scale/ray_shards.py on a real local Ray instance (ray from .venv/thirdparty, installed by
`make thirdparty`): three shards of a tiny-model redteam run, one task killed mid-shard, Ray's retry
resuming it, and the merge equal to the unsharded run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_shard import close, comparable, rows

ROOT = Path(__file__).resolve().parents[1]
THIRDPARTY = Path(os.environ.get("CAIKIT_THIRDPARTY", Path(sys.prefix) / "thirdparty"))
PROMPTS = [f"Request {i}: tell me how to do thing number {i}." for i in range(18)]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (THIRDPARTY / "ray").is_dir(), reason=f"ray is not installed in {THIRDPARTY} (make thirdparty)")]

# Stands in for `caikit` on PATH. Shard 2's first attempt is killed once it has written 2 records:
# first its caikit process, then the Ray worker that ran it (a system failure, which Ray retries).
WRAPPER = """#!/bin/bash
real={real}
part={out}.2-of-3.jsonl.partial
if [[ " $* " == *" --shard 2/3 "* && ! -e {mark} ]]; then
    "$real" "$@" & child=$!
    while [[ $(cat "$part" 2>/dev/null | wc -l) -lt 2 ]] && kill -0 $child 2>/dev/null; do sleep 0.01; done
    kill -9 $child; touch {mark}; cp "$part" {mark}
    kill -9 $PPID; exit 137
fi
exec "$real" "$@"
"""


def test_ray_runs_the_shards_retries_a_killed_task_and_merges(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    stage = ["redteam", "-i", str(prompts), "--model", str(tiny_model), "--max-new-tokens", "48", "--batch-size", "1", "--seed", "5"]
    whole = tmp_path / "whole.jsonl"
    done = subprocess.run([sys.executable, "-m", "caikit.cli", *stage, "-o", str(whole), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    bin_dir, out, mark = tmp_path / "bin", tmp_path / "ray" / "out.jsonl", tmp_path / "killed.jsonl"
    bin_dir.mkdir()
    out.parent.mkdir()
    wrapper = bin_dir / "caikit"
    wrapper.write_text(WRAPPER.format(real=Path(sys.executable).parent / "caikit", out=str(out).removesuffix(".jsonl"), mark=mark))
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(THIRDPARTY), "RAY_DEDUP_LOGS": "0",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples/scale/ray_shards.py"), "--shards", "3", "--num-cpus", "2",
                           "-o", str(out), "--", *stage], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = mark.read_text()
    assert killed.count("\n") >= 2, "shard 2 was killed after writing records"
    assert (out.parent / "out.2-of-3.jsonl").read_text().startswith(killed), "the retry resumed the killed shard's records"
    merged = rows(out)
    assert close(comparable(merged), comparable(rows(whole)))
    assert [r["caikit"]["shard"]["position"] for r in merged] == list(range(len(PROMPTS)))
