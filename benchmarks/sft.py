"""Time of one SFT epoch on the embedded model, full fine-tuning and LoRA, on this machine.

    python benchmarks/sft.py DATA.jsonl [--records 64] [--max-length 512] [--batch-size 4]

DATA is prompt-completion JSONL (e.g. `revise` output); the first --records records are used.
"""

import argparse
import tempfile
import time
from pathlib import Path

from caikit import sft
from caikit.training import LoraOptions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        lines = Path(args.data).read_text().splitlines()[: args.records]
        data.write_text("\n".join(lines) + "\n")
        print(f"{'mode':<6} {'records':>7} {'max_len':>7} {'steps':>5} {'seconds':>8} {'first loss':>10} {'final loss':>10}")
        for mode, lora in (("full", None), ("lora", LoraOptions())):
            options = sft.SftOptions(max_length=args.max_length, batch_size=args.batch_size, lora=lora, device="cpu")
            start = time.perf_counter()
            report = sft.run(str(data), [], Path(tmp) / mode, options, quiet=True)
            seconds = time.perf_counter() - start
            m = report["metrics"]
            print(f"{mode:<6} {len(lines):>7} {args.max_length:>7} {m['steps']:>5} {seconds:>8.1f} {m['first_loss']:>10.3f} {m['final_loss']:>10.3f}")


if __name__ == "__main__":
    main()
