"""How close caikit's lean engine runs to what this CPU can do: the achieved GFLOP/s of a decode step
and of a prefill against the same machine's measured float32 matmul peak, and what the LM head costs.

    python benchmarks/roofline.py [--batch 64] [--context 96] [--repeats 5]

Run alone or from `make bench` (benchmarks/run.py prints this table after its own). Floating-point
operations are counted from the model's config, 2 per multiply-add: every linear layer and the LM
head over every token, plus attention's scores and weighted sums over the columns each token reads.
The peak is a large square float32 matmul (torch.mm, this process's threads; the fastest of three
sizes); the memory figure is the best read rate of a 256 MB tensor. Each timing is the best of
`--repeats` runs, after one warm-up, so that one slow run (another process, a page fault) does not
decide it. A virtual machine's speed moves from one minute to the next (the same decode step read
42% and 77% of a peak measured a minute before it), so every run of a measure is paired with the
peak matmul timed just before it, and its share of peak is the median of those pairs, with their
range: the machine's moves cancel within a pair.

Under the batch-64 decode step, what bounds it: the same step's matrix products alone (every linear
layer and the LM head on 64 rows, in the model's order, so their weights stream through the caches
as in the step), with the rest of the step (attention, norms, rotary, cache writes) the difference;
and the bytes the step must read (weights once, every cached key and value) at the measured rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

MODEL = "smollm2-135m-instruct"


def best_of(function, repeats: int) -> float:
    """The shortest of `repeats` timed calls of `function`, after one untimed call."""
    return min(timed(function, repeats))


def timed(function, repeats: int, before=None) -> list[float]:
    """Seconds of each of `repeats` calls of `function`, after one untimed call; `before()`, if
    given, is called (untimed) ahead of each."""
    function()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


class Peak:
    """This machine's float32 matmul rate: the fastest of n x n x n products for n in `sizes`, then
    that size timed again next to each measure held against it (`share`)."""

    def __init__(self, repeats: int, sizes: tuple[int, ...] = (1024, 1536, 2048)):
        rates = {n: self._rate(n, best_of(self._product(n), repeats)) for n in sizes}
        self.size = max(rates, key=rates.get)
        self.best = rates[self.size]
        self.seen = [self.best]  # every rate measured in this run, to say how far the machine moved
        self._multiply = self._product(self.size)

    @staticmethod
    def _product(n: int):
        a, b = torch.randn(n, n), torch.randn(n, n)
        return lambda: torch.mm(a, b)

    @staticmethod
    def _rate(n: int, seconds: float) -> float:
        return 2 * n**3 / seconds / 1e9

    def now(self) -> float:
        """GFLOP/s of one product, timed now."""
        start = time.perf_counter()
        self._multiply()
        rate = self._rate(self.size, time.perf_counter() - start)
        self.seen.append(rate)
        return rate

    def share(self, function, flops: float, repeats: int) -> tuple[float, list[float]]:
        """(best seconds of `function`, its GFLOP/s as a share of the peak timed just before each run)."""
        rates: list[float] = []
        times = timed(function, repeats, before=lambda: rates.append(self.now()))
        return min(times), sorted(flops / t / 1e9 / rate for t, rate in zip(times, rates))


def of_peak(shares: list[float]) -> str:
    """'58% of peak (median of 7 paired runs, 52-63%)'."""
    if len(shares) == 1:
        return f"{shares[0]:.0%} of peak (one paired run)"
    return f"{statistics.median(shares):.0%} of peak (median of {len(shares)} paired runs, {100 * min(shares):.0f}-{max(shares):.0%})"


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


def decode_step(engine, batch: int, context: int):
    """(function, FLOPs) of one decode step of `batch` sequences that each hold `context` tokens."""
    from caikit.backends.decode import Slots

    config = engine.model.config
    rows = [[(7 * b + 3 * k) % 1000 + 10 for k in range(context)] for b in range(batch)]
    held, _ = engine.prefill(rows)
    cache = Slots(config, batch, context + 1, engine.dtype, engine.device)
    cache.put(held, 0, context)
    tokens = torch.full((batch,), 42)
    lengths = torch.full((batch,), context)
    return lambda: engine.step(cache, tokens, lengths), batch * (linear_flops(config) + attention_flops(config, context + 1))


def step_matmuls(engine, batch: int):
    """(function, FLOPs) of a decode step's matrix products alone: every linear layer of the model
    and its LM head, in the model's order, on `batch` rows each (what the step would take if
    attention, norms and the rest cost nothing; its weights stream through the caches as in the step)."""
    layers = [m for m in engine.model.modules() if isinstance(m, torch.nn.Linear) and m is not engine.model.lm_head]
    inputs = {m.in_features: torch.randn(batch, m.in_features, dtype=engine.dtype) for m in layers}
    hidden = torch.randn(batch, engine.model.config.hidden_size, dtype=engine.dtype)

    def products():
        for m in layers:
            torch.nn.functional.linear(inputs[m.in_features], m.weight)
        engine.head(hidden)

    return products, batch * linear_flops(engine.model.config)


def step_bytes(engine, batch: int, context: int) -> tuple[int, int]:
    """(bytes of weights, bytes of keys and values) one decode step reads: every linear layer's and
    the LM head's weights once, and each sequence's `context` + 1 cached columns in every layer."""
    config = engine.model.config
    weights = sum(m.weight.numel() * m.weight.element_size() for m in engine.model.modules() if isinstance(m, torch.nn.Linear))
    dim = head_dim(config)
    cached = 2 * config.num_hidden_layers * batch * config.num_key_value_heads * (context + 1) * dim * torch.finfo(engine.dtype).bits // 8
    return weights, cached


def prefill(engine, batch: int, tokens: int):
    """(function, FLOPs) of prefilling `batch` rows of `tokens` tokens (logits after each row's last)."""
    config = engine.model.config
    rows = [[(11 * b + 5 * k) % 1000 + 10 for k in range(tokens)] for b in range(batch)]
    head = 2 * config.hidden_size * config.vocab_size
    per_row = tokens * (linear_flops(config) - head) + head + sum(attention_flops(config, k + 1) for k in range(tokens))
    return lambda: engine.prefill(rows), batch * per_row


def lm_heads(engine, batch: int) -> list[tuple[str, object, float]]:
    """The LM head alone at `batch` rows, as the model runs it and as the engine does: (how, function, FLOPs)."""
    weight = engine.model.lm_head.weight
    hidden = torch.randn(batch, weight.shape[1], dtype=weight.dtype)
    flops = 2 * batch * weight.numel()
    return [("F.linear(x, W), as the model runs it", lambda: torch.nn.functional.linear(hidden, weight), flops),
            ("the engine's head, (W x^T)^T", lambda: engine.head(hidden), flops)]


def roofline(engine, batch: int = 64, context: int = 96, repeats: int = 5) -> list[tuple[str, str]]:
    """(measure, figure) rows: the machine's ceilings, then the engine's steps against them, each
    as a share of the matmul peak timed next to it (`Peak`)."""
    peak, bandwidth = Peak(repeats), read_bandwidth(repeats)

    def measure(function, flops: float) -> tuple[float, str]:
        """(best seconds, figure) of `function`, which does `flops`."""
        with torch.inference_mode():
            seconds, shares = peak.share(function, flops, repeats)
        return seconds, f"{seconds * 1e3:.1f} ms, {flops / 1e9:.2f} GFLOP, {flops / seconds / 1e9:.1f} GFLOP/s; {of_peak(shares)}"

    step, figure = measure(*decode_step(engine, batch, context))
    rows = [(f"decode step, batch {batch}, {context} tokens held", figure)]
    # what bounds that step: its products alone, and the bytes it must read
    products, figure = measure(*step_matmuls(engine, batch))
    weights, cached = step_bytes(engine, batch, context)
    rows += [("  its matrix products alone (linear layers, LM head)", f"{figure}; the rest of the step {(step - products) * 1e3:.1f} ms"),
             (f"  its reads: weights {weights / 1e6:.0f} MB, keys/values {cached / 1e6:.0f} MB",
              f"{(weights + cached) / bandwidth / 1e6:.1f} ms at {bandwidth:.1f} GB/s")]
    rows.append(("decode step, batch 16, same", measure(*decode_step(engine, 16, context))[1]))
    rows.append((f"prefill, 16 rows x {context} tokens", measure(*prefill(engine, 16, context))[1]))
    for how, function, flops in lm_heads(engine, batch):
        rows.append((f"LM head, batch {batch}: {how}", measure(function, flops)[1]))
    ceilings = [("kernels", f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
                            f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'unset')}"),
                (f"float32 matmul peak ({peak.size}^3, torch.mm)",
                 f"{peak.best:.1f} GFLOP/s at best; {min(peak.seen):.0f}-{max(peak.seen):.0f} over this run"),
                ("memory read (256 MB sum)", f"{bandwidth:.1f} GB/s")]
    return ceilings + rows


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
