"""Throughput of shard workers against one server: real `caikit redteam --shard I/N` processes with
`--concurrency C` each, against one `caikit serve` of the embedded model, for a grid of N and C.
By hand, not in `make test`; give it the machine alone (server and workers share its cores).

    .venv/bin/python benchmarks/shards.py [--shards 1,2,4] [--concurrency 1,4,16] [--tokens 24] [--max-batch 64]

Each cell: the example red-team prompts (64 of them) answered once in all, split among N workers;
wall seconds from the first worker's start to the last one's end (their start-up included, as a
user's shard jobs pay it), answers/s and completion tokens/s. The server gathers concurrent
requests into one batch (`--window-ms`, at most `--max-batch` sequences), so what sets its batch is
the number of requests in flight, N x C, not N or C alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import ROOT, start_server  # noqa: E402

from caikit import models  # noqa: E402

PROMPTS = ROOT / "examples/prompts/redteam.jsonl"
TOKENIZER = None  # the embedded model's, to count completion tokens (main sets it)


def cell(url: str, shards: int, concurrency: int, tokens: int, folder: Path) -> tuple[float, int, int]:
    """(wall seconds, answers, completion tokens) of `shards` workers with `concurrency` each."""
    outputs = [folder / f"s{shards}c{concurrency}.{i}-of-{shards}.jsonl" for i in range(1, shards + 1)]
    started = time.time()
    workers = [subprocess.Popen([sys.executable, "-m", "caikit.cli", "redteam", "-i", str(PROMPTS), "--limit", "64",
                                 "--model", f"openai:smollm2-135m-instruct@{url}", "--shard", f"{i}/{shards}",
                                 "--concurrency", str(concurrency), "--batch-size", "64", "--max-new-tokens", str(tokens),
                                 "--temperature", "0.7", "--seed", "1", "-o", str(out), "-q"],
                                stderr=subprocess.PIPE) for i, out in zip(range(1, shards + 1), outputs)]
    for worker in workers:
        if worker.wait() != 0:
            sys.exit(f"a worker failed:\n{worker.stderr.read().decode()[-2000:]}")
    wall = time.time() - started
    answers = [json.loads(line)["completion"][-1]["content"] for out in outputs for line in out.read_text().splitlines()]
    return wall, len(answers), sum(len(ids) for ids in TOKENIZER(answers, add_special_tokens=False)["input_ids"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--max-batch", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    global TOKENIZER
    TOKENIZER = models.load_tokenizer(models.resolve(models.DEFAULT_MODEL))
    server = start_server(args.port, extra=["--max-batch", str(args.max_batch)])
    url = f"http://127.0.0.1:{args.port}/v1"
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            cell(url, 1, 4, args.tokens, Path(folder))  # (warm-up: the server's first batches are slower)
            for shards in map(int, args.shards.split(",")):
                for concurrency in map(int, args.concurrency.split(",")):
                    wall, answers, tokens = cell(url, shards, concurrency, args.tokens, Path(folder))
                    rows.append((shards, concurrency, wall, answers, tokens))
                    print(f"shards {shards} x concurrency {concurrency}: {wall:.1f} s, {answers} answers, {tokens} tokens", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("| shards | --concurrency | in flight | wall s | answers/s | completion tok/s |")
    print("|---|---|---|---|---|---|")
    for shards, concurrency, wall, answers, tokens in rows:
        print(f"| {shards} | {concurrency} | {shards * concurrency} | {wall:.1f} | {answers / wall:.2f} | {tokens / wall:.1f} |")
    print(f"(caikit serve --max-batch {args.max_batch}, embedded model, {args.tokens} new tokens, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
