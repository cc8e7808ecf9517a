"""benchmarks/gpu_check.py, the one command that checks caikit on a lent GPU machine, runs end to end
on CPU with a tiny model, so that it works the day a GPU is at hand."""

import json
import subprocess
import sys

from conftest import ROOT


def test_the_gpu_check_runs_on_cpu_with_a_tiny_model(tiny_model, tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--tokenizer", str(tiny_model), "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {r["measure"]: r for r in json.loads(out.read_text())}
    stages = [m for m in rows if m.startswith("caikit ")]
    assert len(stages) == 6 and all(rows[m]["status"] == "ok" for m in stages), rows
    assert any(m.startswith("redteam generation") and "lean engine" in m and rows[m]["value"] > 0 for m in rows)
    assert rows["label scoring, both orders (pairs/s)"]["value"] > 0
    assert "skipped" in rows["tests/test_cuda.py (s)"]["status"]  # no GPU here: the CUDA tests collect and skip
    assert "caikit GPU check: CPU" in done.stdout
