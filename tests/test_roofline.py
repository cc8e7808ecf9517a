"""benchmarks/roofline.py, which `make bench` prints, runs on a tiny model and counts exactly what a
decode step reads; its timings are figures to read, not to test."""

import sys

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import roofline  # noqa: E402


def test_the_roofline_counts_what_a_step_reads_and_prints_every_row(tiny_backend):
    engine = tiny_backend._engine
    config = engine.model.config  # 2 layers, hidden 32, 4 heads of 8, 2 key/value heads, untied LM head
    weights, cached = roofline.step_bytes(engine, batch=3, context=5)
    per_layer = 32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64  # q and o, k and v, gate up and down
    assert weights == 4 * (2 * per_layer + 32 * config.vocab_size)
    assert cached == 4 * 2 * 2 * 3 * 2 * 6 * 8  # float32, keys and values, layers, rows, heads, columns, dim
    assert roofline.linear_flops(config) == 2 * (2 * per_layer + 32 * config.vocab_size)
    rows = dict(roofline.roofline(engine, batch=3, context=5, repeats=1))
    assert torch.backends.cpu.get_cpu_capability() in rows["kernels"]
    assert any(name.startswith("  its matrix products alone") and "% of peak" in figure for name, figure in rows.items())
    measured = [figure for name, figure in rows.items() if name.startswith(("decode step", "prefill", "LM head"))]
    assert len(measured) == 5 and all("of peak (one paired run)" in figure for figure in measured)
    assert any(name.startswith("float32 matmul peak") and "over this run" in figure for name, figure in rows.items())


def test_a_share_of_peak_is_the_median_of_its_pairs_with_their_range():
    assert roofline.of_peak([0.71, 0.52, 0.6]) == "60% of peak (median of 3 paired runs, 52-71%)"
    assert roofline.of_peak([0.4, 0.8, 0.5, 0.6]) == "55% of peak (median of 4 paired runs, 40-80%)"
    assert roofline.of_peak([0.6]) == "60% of peak (one paired run)"
