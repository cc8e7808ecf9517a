"""benchmarks/run.py (`make bench`) on a tiny model: its generation rows come from alternated pairs of
runs and say how far the ratio moved between them; the timings themselves are figures to read."""

import sys
from types import SimpleNamespace

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import run  # noqa: E402


def test_generation_rows_are_medians_of_alternated_pairs_with_the_ratios_range(tiny_model):
    from caikit.backends.hf import TransformersBackend

    backend = TransformersBackend.load(str(tiny_model), batch_size=4, device="cpu")
    plain = TransformersBackend(backend.loaded, engine="plain")
    rows = run.generation(backend, plain, SimpleNamespace(prompts=4, new_tokens=3, repeats=2))
    measured = [row for row in rows if row[0].startswith("generate, batch")]
    assert [row[0] for row in measured] == ["generate, batch 16 (tok/s)", "generate, batch 64 (tok/s)"]
    for _, mine, base, what in measured:
        assert mine > 0 and base > 0 and what.startswith("transformers generate; per pair ") and what.endswith("x, 2 alternated pairs")
    assert rows[-1] == ("greedy texts equal to caikit's plain loop", "4/4", "", "")
    one = run.generation(backend, plain, SimpleNamespace(prompts=4, new_tokens=3, repeats=1))
    assert one[0][3] == "transformers generate"
