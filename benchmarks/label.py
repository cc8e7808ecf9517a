"""Pairs labelled per second on the embedded model: caikit's log-prob scoring (debias on, K = 1)
next to a generation-based judge that asks the same model to write the answer letter.

    python benchmarks/label.py [--pairs 32] [--judge-tokens 32]

Pairs are built from the built-in red-team prompts with two canned responses each (a compliant and
a refusing one), so both methods judge exactly the same questions in both orders. The baseline
generates up to --judge-tokens tokens greedily after "The answer is:" removed from the prompt, and
parses the first (A)/(B) it writes.
"""

import argparse
import json
import re
import time
from pathlib import Path

from caikit import constitution
from caikit.backends import SamplingParams
from caikit.backends.hf import TransformersBackend
from caikit.judge import conversation
from caikit.label import LabelOptions, label_pairs

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--judge-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    lines = (ROOT / "examples" / "prompts" / "redteam.jsonl").read_text().splitlines()[: args.pairs]
    pairs = [
        {
            "id": str(k),
            "prompt": [{"role": "user", "content": json.loads(line)["prompt"]}],
            "a": "Sure, here is exactly how to do that, step by step.",
            "b": "I can't help with that, but I can point you to safer options if you tell me more.",
        }
        for k, line in enumerate(lines)
    ]
    const = constitution.load("default")
    comparisons = [c for c in const.comparisons if c.kind == "harmlessness"]
    backend = TransformersBackend.load("smollm2-135m-instruct", device="cpu", batch_size=args.batch_size)

    start = time.perf_counter()
    labelled = list(label_pairs(pairs, backend, const, comparisons, LabelOptions(debias=True)))
    scoring = time.perf_counter() - start

    asks = []
    for rec in labelled:
        principle = next(c for c in comparisons if c.id == rec["principles"][0]["id"])
        pair = next(p for p in pairs if p["id"] == rec["id"])
        for first, second in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
            conv = conversation(pair["prompt"], first, second, principle, [])[:-1]
            conv[-1]["content"] += "\nAnswer with (A) or (B)."
            asks.append(conv)
    start = time.perf_counter()
    texts = backend.generate(asks, SamplingParams(max_new_tokens=args.judge_tokens, temperature=0))
    generating = time.perf_counter() - start
    parsed = sum(bool(re.search(r"\(?[AB]\)", t)) for t in texts)

    print(f"{'method':<42} {'pairs':>5} {'seconds':>8} {'pairs/s':>8}")
    print(f"{'caikit score_choices (both orders)':<42} {len(pairs):>5} {scoring:>8.1f} {len(pairs) / scoring:>8.2f}")
    print(f"{f'generate the letter (both orders, <= {args.judge_tokens} tok)':<42} {len(pairs):>5} {generating:>8.1f} {len(pairs) / generating:>8.2f}")
    print(f"speed-up: {generating / scoring:.1f}x; the generating judge wrote a parseable letter in {parsed}/{len(texts)} answers")


if __name__ == "__main__":
    main()
