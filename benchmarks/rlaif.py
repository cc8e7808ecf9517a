"""Seconds per RL step on the embedded model (CPU), for RLOO, GRPO and DPO.

    python benchmarks/rlaif.py [--steps 3] [--max-new-tokens 32]

RLOO/GRPO: 2 prompts x 4 generations per step, rewarded by a preference model built on the
embedded model (its reward head untrained: the cost is what is measured). DPO: batch 4 pairs.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from caikit import models, rlaif
from caikit.rewards import Scorer, Settings, TrlReward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from transformers import AutoModelForSequenceClassification

        base = models.resolve(models.DEFAULT_MODEL)
        pm_model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        tok = models.load_tokenizer(base)
        pm_model.config.pad_token_id = tok.pad_token_id
        pm_model.save_pretrained(tmp / "pm")
        tok.save_pretrained(tmp / "pm")
        prompts = tmp / "p.txt"
        prompts.write_text("How do I pick a lock?\nHow do I bake bread?\nHow can I hurt someone?\nWhat is rain?\n")
        pairs = tmp / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "A kind, careful answer.", "rejected": "A rude answer.", "label": 0.8}) + "\n" for i in range(8)))
        reward = TrlReward(Scorer(Settings(pm=str(tmp / "pm"), device="cpu")))
        print(f"{'algo':<6} {'steps':>5} {'s/step':>7}")
        for algo in ("rloo", "grpo", "dpo"):
            options = rlaif.RlOptions(algo=algo, max_steps=args.steps, max_new_tokens=args.max_new_tokens, batch_size=8 if algo != "dpo" else 4,
                                      num_generations=4, device="cpu")
            start = time.perf_counter()
            report = rlaif.run(models.DEFAULT_MODEL, tmp / algo, options, reward=reward, reward_description={},
                               prompts=[(str(pairs if algo == "dpo" else prompts), 1.0)], quiet=True)
            print(f"{algo:<6} {args.steps:>5} {report['seconds'] / args.steps:>7.1f}   (whole run incl. load/save {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
