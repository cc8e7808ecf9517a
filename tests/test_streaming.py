"""Commands that read records stream them: peak memory on 50,000 records stays far below the file's
size times the 6-7 that holding every record costs (benchmarks/scale.py has the figures at 1M)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

N = 50_000
BOUND_MB = 150  # each shard is 40 MB: the code that held every record peaked at 268 MB (inspect), 504 MB (merge); now 38 and 55


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streaming")
    filler = "word " * 120
    paths = [folder / f"labels.{k}-of-2.jsonl" for k in (1, 2)]
    outs = [p.open("w") for p in paths]
    for i in range(N):
        record = {"id": f"{i:016x}", "prompt": [{"role": "user", "content": f"Question {i}? {filler[:200]}"}],
                  "chosen": [{"role": "assistant", "content": filler}], "rejected": [{"role": "assistant", "content": filler[::-1]}],
                  "label": (i % 100) / 100, "caikit": {"stage": "label", "seed": 0, "shard": {"index": i % 2 + 1, "count": 2, "position": i}}}
        outs[i % 2].write(json.dumps(record) + "\n")
    for out in outs:
        out.close()
    return paths


# Linux carries a process's peak RSS across fork and exec, so a command started straight from this
# (large, late in the suite) pytest process would report pytest's peak; a small Python in between
# starts it afresh and reports its peak.
LAUNCH = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=sys.stdout, stderr=sys.stderr)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, file=sys.stderr)"""


def peak_mb(*args) -> tuple[float, str]:
    done = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-m", "caikit.cli", *map(str, args)], capture_output=True, text=True)
    code, kb = done.stderr.split()[-2:]
    assert code == "0", done.stderr
    return int(kb) / 1024, done.stdout


def test_inspect_streams(shards):
    mb = sum(p.stat().st_size for p in shards) / 2**20
    peak, out = peak_mb("inspect", shards[0], "--json")
    assert json.loads(out)["records"] == N // 2
    assert peak < BOUND_MB, f"inspect of {mb / 2:.0f} MB peaked at {peak:.0f} MB"


def test_merge_streams_and_restores_order(shards, tmp_path):
    peak, _ = peak_mb("merge", *shards, "-o", tmp_path / "merged.jsonl", "--quiet")
    with (tmp_path / "merged.jsonl").open() as f:
        positions = [json.loads(line)["caikit"]["shard"]["position"] for line in f]
    assert positions == list(range(N))
    assert peak < BOUND_MB, f"merge peaked at {peak:.0f} MB"
