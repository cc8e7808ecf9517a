"""How close caikit's lean engine runs to what this CPU can do: the achieved GFLOP/s of a decode step
and of a prefill against the same machine's measured float32 matmul peak, and what the LM head costs.

    python benchmarks/roofline.py [--batch 64] [--context 96] [--repeats 5]

Run alone or from `make bench` (benchmarks/run.py prints this table after its own). Floating-point
operations are counted from the model's config, 2 per multiply-add: every linear layer and the LM
head over every token, plus attention's scores and weighted sums over the columns each token reads.
The peak is the best of three large square float32 matmuls (torch.mm, this process's threads); the
memory figure is the best read rate of a 256 MB tensor. Each timing is the best of `--repeats` runs,
after one warm-up, so that one slow run (another process, a page fault) does not decide it.

Under the batch-64 decode step, what bounds it: the same step's matrix products alone (every linear
layer and the LM head on 64 rows, in the model's order, so their weights stream through the caches
as in the step), with the rest of the step (attention, norms, rotary, cache writes) the difference;
and the bytes the step must read (weights once, every cached key and value) at the measured rate.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

MODEL = "smollm2-135m-instruct"


def best_of(function, repeats: int) -> float:
    """The shortest of `repeats` timed calls of `function`, after one untimed call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(repeats: int, sizes: tuple[int, ...] = (1024, 1536, 2048)) -> float:
    """The best GFLOP/s of n x n x n float32 matmuls: the ceiling the engine is held against."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = max(best, 2 * n**3 / best_of(lambda: torch.mm(a, b), repeats) / 1e9)
    return best


def read_bandwidth(repeats: int, megabytes: int = 256) -> float:
    """GB/s of summing a float32 tensor that does not fit in cache."""
    x = torch.ones(megabytes * 2**20 // 4)
    return x.numel() * 4 / best_of(lambda: x.sum(), repeats) / 1e9


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def linear_flops(config) -> int:
    """Multiply-adds x 2 of one token through every linear layer and the LM head."""
    hidden, inner = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    dim = head_dim(config)
    attention = hidden * heads * dim * 2 + hidden * kv * dim * 2  # q and o; k and v
    mlp = 3 * hidden * inner  # gate, up, down
    return 2 * (config.num_hidden_layers * (attention + mlp) + hidden * config.vocab_size)


def attention_flops(config, columns: int) -> int:
    """Scores and weighted sum of one token reading `columns` key/value columns, every layer."""
    dim = head_dim(config)
    return 2 * 2 * config.num_hidden_layers * config.num_attention_heads * dim * columns


def decode_step(engine, batch: int, context: int, repeats: int) -> tuple[float, float]:
    """(seconds, FLOPs) of one decode step of `batch` sequences that each hold `context` tokens."""
    from caikit.backends.decode import Slots

    config = engine.model.config
    rows = [[(7 * b + 3 * k) % 1000 + 10 for k in range(context)] for b in range(batch)]
    held, _ = engine.prefill(rows)
    cache = Slots(config, batch, context + 1, engine.dtype, engine.device)
    cache.put(held, 0, context)
    tokens = torch.full((batch,), 42)
    lengths = torch.full((batch,), context)
    with torch.inference_mode():
        seconds = best_of(lambda: engine.step(cache, tokens, lengths), repeats)
    return seconds, batch * (linear_flops(config) + attention_flops(config, context + 1))


def step_matmuls(engine, batch: int, repeats: int) -> float:
    """Seconds of a decode step's matrix products alone: every linear layer of the model and its LM
    head, in the model's order, on `batch` rows each (what the step would take if attention, norms
    and the rest cost nothing; its weights stream through the caches as in the step)."""
    layers = [m for m in engine.model.modules() if isinstance(m, torch.nn.Linear) and m is not engine.model.lm_head]
    inputs = {m.in_features: torch.randn(batch, m.in_features, dtype=engine.dtype) for m in layers}
    hidden = torch.randn(batch, engine.model.config.hidden_size, dtype=engine.dtype)

    def products():
        for m in layers:
            torch.nn.functional.linear(inputs[m.in_features], m.weight)
        engine.head(hidden)

    with torch.inference_mode():
        return best_of(products, repeats)


def step_bytes(engine, batch: int, context: int) -> tuple[int, int]:
    """(bytes of weights, bytes of keys and values) one decode step reads: every linear layer's and
    the LM head's weights once, and each sequence's `context` + 1 cached columns in every layer."""
    config = engine.model.config
    weights = sum(m.weight.numel() * m.weight.element_size() for m in engine.model.modules() if isinstance(m, torch.nn.Linear))
    dim = head_dim(config)
    cached = 2 * config.num_hidden_layers * batch * config.num_key_value_heads * (context + 1) * dim * torch.finfo(engine.dtype).bits // 8
    return weights, cached


def prefill(engine, batch: int, tokens: int, repeats: int) -> tuple[float, float]:
    """(seconds, FLOPs) of prefilling `batch` rows of `tokens` tokens (logits after each row's last)."""
    config = engine.model.config
    rows = [[(11 * b + 5 * k) % 1000 + 10 for k in range(tokens)] for b in range(batch)]
    with torch.inference_mode():
        seconds = best_of(lambda: engine.prefill(rows), repeats)
    head = 2 * config.hidden_size * config.vocab_size
    per_row = tokens * (linear_flops(config) - head) + head + sum(attention_flops(config, k + 1) for k in range(tokens))
    return seconds, batch * per_row


def lm_head(engine, batch: int, repeats: int) -> list[tuple[str, float]]:
    """The LM head alone at `batch` rows: as the model runs it, and as the engine runs it."""
    weight = engine.model.lm_head.weight
    hidden = torch.randn(batch, weight.shape[1], dtype=weight.dtype)
    with torch.inference_mode():
        linear = best_of(lambda: torch.nn.functional.linear(hidden, weight), repeats)
        engines = best_of(lambda: engine.head(hidden), repeats)
    return [("F.linear(x, W), as the model runs it", linear), ("the engine's head, (W x^T)^T", engines)]


def achieved(name: str, seconds: float, flops: float, peak: float) -> tuple[str, str]:
    rate = flops / seconds / 1e9
    return name, f"{seconds * 1e3:.1f} ms, {flops / 1e9:.2f} GFLOP, {rate:.1f} GFLOP/s = {rate / peak:.0%} of peak"


def roofline(engine, batch: int = 64, context: int = 96, repeats: int = 5) -> list[tuple[str, str]]:
    """(measure, figure) rows: the machine's ceilings, then the engine's steps against them."""
    peak, bandwidth = matmul_peak(repeats), read_bandwidth(repeats)
    rows = [("kernels", f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
                        f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'unset')}"),
            ("float32 matmul peak (best of 1024^3 to 2048^3, torch.mm)", f"{peak:.1f} GFLOP/s"),
            ("memory read (256 MB sum)", f"{bandwidth:.1f} GB/s")]
    step = decode_step(engine, batch, context, repeats)
    rows.append(achieved(f"decode step, batch {batch}, {context} tokens held", *step, peak))
    # what bounds that step: its products alone, and the bytes it must read
    products, linear = step_matmuls(engine, batch, repeats), batch * linear_flops(engine.model.config)
    weights, cached = step_bytes(engine, batch, context)
    rows += [("  its matrix products alone (linear layers, LM head)",
              f"{products * 1e3:.1f} ms, {linear / products / 1e9 / peak:.0%} of peak; the rest of the step {(step[0] - products) * 1e3:.1f} ms"),
             (f"  its reads: weights {weights / 1e6:.0f} MB, keys/values {cached / 1e6:.0f} MB",
              f"{(weights + cached) / bandwidth / 1e6:.1f} ms at {bandwidth:.1f} GB/s")]
    rows.append(achieved("decode step, batch 16, same", *decode_step(engine, 16, context, repeats), peak))
    rows.append(achieved(f"prefill, 16 rows x {context} tokens", *prefill(engine, 16, context, repeats), peak))
    weight = engine.model.lm_head.weight
    flops = 2 * batch * weight.numel()
    for how, seconds in lm_head(engine, batch, repeats):
        rows.append((f"LM head, batch {batch}: {how}", f"{seconds * 1e3:.1f} ms, {flops / seconds / 1e9:.1f} GFLOP/s = "
                                                      f"{flops / seconds / 1e9 / peak:.0%} of peak"))
    return rows


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(name) for name, _ in rows)
    for name, figure in rows:
        print(f"{name:{width}}  {figure}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=96, help="tokens each sequence holds at the decode step")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from caikit import models
    from caikit.backends.decode import Engine

    engine = Engine(models.load(MODEL, device="cpu", dtype="float32").model)
    print_rows(f"roofline: {MODEL}, float32", roofline(engine, args.batch, args.context, args.repeats))


if __name__ == "__main__":
    main()
