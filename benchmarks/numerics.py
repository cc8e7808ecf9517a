"""What moves between CPU kinds, on the embedded model in float32, and what pinning the numerics costs.

    python benchmarks/numerics.py [--prompts 32] [--new-tokens 64] [--pairs 32]

Each setting runs in its own process (torch and MKL read their settings once, at start):
- `native`: torch's and MKL's own choice of kernels on this CPU;
- `avx2`: the kernels an AVX2-only CPU gets (ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2):
  on a CPU with AVX-512 this stands in for a machine without it;
- `portable`: the setting for identical records on every x86-64 CPU (README, "Reproducibility"):
  ATEN_CPU_CAPABILITY=avx2 and MKL_CBWR=COMPATIBLE,STRICT, this machine's thread count;
- `portable-on-avx2`: the same, with MKL also capped at AVX2 as on an AVX2-only CPU; it must equal
  `portable` exactly, which is what the setting promises.

For each, against `native` (and `portable-on-avx2` against `portable`): greedy and seeded sampled
texts that are equal (and where the first difference falls), choice log-prob differences, the
debiased label probability p of hh-rlhf pairs (when ../shared is there) and how many change side, and
the sampling speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "portable": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT"},
    "portable-on-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def child(args) -> dict:
    """Run in a process of its own: the embedded model's outputs under the current environment."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import HH, MODEL, label_jobs, prompts

    from caikit import judge, models
    from caikit.backends import SamplingParams
    from caikit.backends.hf import TransformersBackend

    backend = TransformersBackend(models.load(MODEL, device="cpu", dtype="float32"), batch_size=16)
    convs = prompts(args.prompts)
    greedy = backend.generate(convs, SamplingParams(max_new_tokens=args.new_tokens, temperature=0))
    backend.generated_tokens = 0
    start = time.perf_counter()
    sampled = backend.generate(convs, SamplingParams(max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.95, seed=0))
    tok_s = backend.generated_tokens / (time.perf_counter() - start)
    choices = backend.score_choices(convs, [" Sure", " I can't help with that", " (A)", " (B)"])
    labels = [r["p"] for r in judge.score_pairs(backend, label_jobs(args.pairs))] if HH.is_file() else []
    return {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "greedy": greedy, "sampled": sampled, "tok_s": tok_s, "choices": choices, "labels": labels}


def first_difference(a: str, b: str) -> int | None:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def compare(new: dict, old: dict) -> str:
    parts = []
    for kind in ("greedy", "sampled"):
        where = [first_difference(a, b) for a, b in zip(new[kind], old[kind])]
        moved = sorted(w for w in where if w is not None)
        at = f" (first difference at character {moved[len(moved) // 2]} median, {moved[0]} earliest)" if moved else ""
        parts.append(f"{kind} texts equal {len(where) - len(moved)}/{len(where)}{at}")
    diffs = sorted(abs(a - b) for x, y in zip(new["choices"], old["choices"]) for a, b in zip(x, y))
    parts.append(f"choice log-prob |diff| median {diffs[len(diffs) // 2]:.1e}, max {diffs[-1]:.1e}")
    if new["labels"]:
        moved = sorted(abs(a - b) for a, b in zip(new["labels"], old["labels"]))
        sides = sum((a > 0.5) != (b > 0.5) for a, b in zip(new["labels"], old["labels"]))
        parts.append(f"label p |diff| median {moved[len(moved) // 2]:.1e}, max {moved[-1]:.1e}, {sides}/{len(moved)} change side")
    return "; ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=32, help="hh-rlhf pairs labelled")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        print(json.dumps(child(args)))
        return
    results = {}
    for name, env in SETTINGS.items():
        command = [sys.executable, __file__, "--child", "--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens), "--pairs", str(args.pairs)]
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.splitlines()[-1])
        print(f"{name}: torch kernels {results[name]['capability']}, {results[name]['threads']} threads, "
              f"sampling {results[name]['tok_s']:.1f} tok/s", file=sys.stderr)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    print(f"\nnumerics across CPU kinds: embedded model, float32, {cpu}, {os.cpu_count()} CPUs, "
          f"{args.prompts} prompts x {args.new_tokens} tokens, {args.pairs} label pairs")
    for name, base in (("avx2", "native"), ("portable", "native"), ("portable-on-avx2", "portable")):
        print(f"- {name} vs {base}: {compare(results[name], results[base])}")
    for name in SETTINGS:
        print(f"- {name}: sampling {results[name]['tok_s']:.1f} tok/s ({results[name]['tok_s'] / results['native']['tok_s']:.2f}x native)")


if __name__ == "__main__":
    main()
