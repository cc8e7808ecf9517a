"""Throughput of `caikit revise` on the embedded model: prompts/min at 2 rounds, batch 16.

    python benchmarks/revise.py [--prompts 16] [--rounds 2] [--batch-size 16] [--no-critique]

The red-team answers to revise are generated first (64 tokens, not timed); then the revise stage
runs with its defaults (critique 128 tokens, revision 256 tokens, 2 few-shot dialogues, append).
"""

import argparse
import json
import time
from pathlib import Path

from caikit import constitution, redteam, revise
from caikit.backends import SamplingParams
from caikit.backends.hf import TransformersBackend
from caikit.records import prompt_id

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-critique", action="store_true")
    args = parser.parse_args()

    lines = (ROOT / "examples" / "prompts" / "redteam.jsonl").read_text().splitlines()[: args.prompts]
    prompts = [[{"role": "user", "content": json.loads(line)["prompt"]}] for line in lines]
    records = [{"id": prompt_id(p), "prompt": p} for p in prompts]
    backend = TransformersBackend.load("smollm2-135m-instruct", device="cpu", batch_size=args.batch_size)
    answered = list(redteam.answer(records, backend, SamplingParams(max_new_tokens=64)))

    const = constitution.load("default")
    backend.generated_tokens = 0
    start = time.perf_counter()
    out = list(revise.run(answered, backend, const, SamplingParams(), rounds=args.rounds, critique=not args.no_critique))
    seconds = time.perf_counter() - start
    failed = sum(1 for r in out for s in r["revisions"] if s.get("failed"))
    print(f"{'prompts':>7} {'rounds':>6} {'batch':>5} {'critique':>8} {'seconds':>8} {'prompts/min':>11} {'tok/s':>6} {'failed rounds':>13}")
    print(
        f"{len(out):>7} {args.rounds:>6} {args.batch_size:>5} {str(not args.no_critique):>8} {seconds:>8.1f} "
        f"{60 * len(out) / seconds:>11.1f} {backend.generated_tokens / seconds:>6.1f} {failed:>13}"
    )


if __name__ == "__main__":
    main()
