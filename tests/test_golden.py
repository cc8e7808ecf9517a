"""Golden records: for the same seeds, the data stages and the multiple-choice / PM evals give the same
records and figures on the tiny model as when the files in tests/golden/ were written. Timestamps
(`created`) are ignored; floats are compared to 1e-5, everything else exactly.

The records come from tests/golden_records.py, run in a subprocess under PORTABLE_NUMERICS: torch's AVX2
kernels, MKL's vendor-independent code branch and one thread. Under a CPU's own kernels the last bits of
the logits move (measured on the tiny model: up to 6e-5 between kernel settings), and a token
sampled near a boundary of the cumulative distribution flips, and so does all text after it.

Regenerate (only when a change of output is intended): CAIKIT_GOLDEN_UPDATE=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]

# The same records on every x86-64 CPU with AVX2 (README, "Reproducibility"): torch's AVX2 kernels
# (not AVX-512), MKL's COMPATIBLE branch (the only one Intel documents as giving the same results on
# Intel and other vendors' CPUs; STRICT: whatever the arrays' alignment), one thread (a reduction split
# over threads sums in another order).
PORTABLE_NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_DYNAMIC": "FALSE",
}


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


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict:
    """Every golden value, written by one subprocess under portable numerics (tiny model built there too:
    torch's normal_ init differs between vector kernels)."""
    out = tmp_path_factory.mktemp("golden")
    env = {**os.environ, **PORTABLE_NUMERICS}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "golden_records.py"), str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    written = json.loads((out / "records.json").read_text())
    assert written["records"]["numerics"] == {"cpu_capability": "AVX2", "threads": 1}
    text = json.dumps(without_timestamps(written["records"])).replace(written["tiny"], "<tiny>").replace(f"{ROOT}/", "<root>/")
    return json.loads(text)


def check(records: dict, *names: str) -> None:
    """Compare each named value with its golden file; with CAIKIT_GOLDEN_UPDATE, rewrite the files
    instead, and skip: nothing was compared, so the test must not pass."""
    if os.environ.get("CAIKIT_GOLDEN_UPDATE"):
        GOLDEN.mkdir(exist_ok=True)
        for name in names:
            (GOLDEN / f"{name}.json").write_text(json.dumps(records[name], indent=1, ensure_ascii=False) + "\n")
        pytest.skip(f"{', '.join(names)} rewritten (CAIKIT_GOLDEN_UPDATE): review the diff of tests/golden/")
    for name in names:
        same(records[name], json.loads((GOLDEN / f"{name}.json").read_text()), name)


def test_redteam_revise_label_records(records):
    check(records, "redteam", "revise", "label")


def test_label_ensemble_few_shot_and_cot(records):
    check(records, "label_ensemble", "label_cot", "label_no_debias")


def test_eval_mc_and_pm_figures(records):
    check(records, "eval_mc", "eval_mc_raw", "eval_pm")
