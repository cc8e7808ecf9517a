"""Generation throughput of caikit's transformers backend on the embedded model, next to a naive
one-prompt-at-a-time `model.generate` loop, in one run.

    python benchmarks/generation.py [--prompts 64] [--naive-prompts 16] [--new-tokens 64]

Prints tokens/s (tokens actually generated, up to each end-of-sequence) for batch sizes 1, 16, 64.
Sampling at temperature 0.7, top-p 0.95; prompts are the built-in red-team and helpful examples.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from caikit.backends import SamplingParams
from caikit.backends.hf import TransformersBackend

ROOT = Path(__file__).resolve().parents[1]


def prompts(count: int) -> list:
    rows = []
    for name in ("redteam.jsonl", "helpful.jsonl"):
        for line in (ROOT / "examples" / "prompts" / name).read_text().splitlines():
            rows.append([{"role": "user", "content": json.loads(line)["prompt"]}])
    return rows[:count]


def naive(backend: TransformersBackend, conversations, new_tokens: int) -> tuple[int, float]:
    model, tok = backend.loaded.model, backend.loaded.tokenizer
    eos = tok.eos_token_id
    tokens, start = 0, time.perf_counter()
    torch.manual_seed(0)
    for conv in conversations:
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=True, temperature=0.7, top_p=0.95)
        row = out[0, ids["input_ids"].shape[1] :].tolist()
        tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--naive-prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,16,64")
    args = parser.parse_args()

    start = time.perf_counter()
    backend = TransformersBackend.load("smollm2-135m-instruct", device="cpu")
    print(f"model load: {time.perf_counter() - start:.2f} s (torch threads: {torch.get_num_threads()})")
    convs = prompts(args.prompts)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.95, seed=0)
    rows = []
    tokens, seconds = naive(backend, convs[: args.naive_prompts], args.new_tokens)
    rows.append((f"naive model.generate loop ({args.naive_prompts} prompts)", 1, tokens, seconds))
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        backend.batch_size = size
        count = args.naive_prompts if size == 1 else len(convs)
        backend.generated_tokens = 0
        t0 = time.perf_counter()
        backend.generate(convs[:count], params)
        rows.append((f"caikit generate ({count} prompts)", size, backend.generated_tokens, time.perf_counter() - t0))
    print(f"{'method':<44} {'batch':>5} {'tokens':>7} {'seconds':>8} {'tok/s':>7}")
    for name, size, tokens, seconds in rows:
        print(f"{name:<44} {size:>5} {tokens:>7} {seconds:>8.1f} {tokens / seconds:>7.1f}")


if __name__ == "__main__":
    main()
