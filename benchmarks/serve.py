"""Throughput through `caikit serve` + the openai backend against the in-process backend, on the
embedded model, and how the server's batching scales with clients that each send one request at a time.

    .venv/bin/python benchmarks/serve.py [--port 8766] [--tokens 32]

Prints one table: generation tokens/s and labelled pairs/s (debiased, one principle) in-process and
through the server (the openai backend's exact scoring: a prompt's choices in one request), then
tokens/s with 1, 4 and 16 client processes (one request in flight each), then `caikit serve-reward`
(the feedback model's absolute reward) under OpenRLHF's pattern: one sample per request, 1 and 16 in
flight.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from caikit import judge
from caikit.backends import SamplingParams, build
from caikit.constitution import load as load_constitution

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [json.loads(line)["prompt"] for line in (ROOT / "examples/prompts/redteam.jsonl").read_text().splitlines()]


def start_server(port: int, command: str = "serve", ready: str = "/v1/models", extra: tuple = ()) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "caikit.cli", command, "--port", str(port), "--device", "cpu", "--quiet", *extra],
                              stdout=subprocess.DEVNULL, stderr=open("/tmp/caikit_serve_bench.log", "w"))
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    sys.exit("caikit serve did not start; see /tmp/caikit_serve_bench.log")


def generation(backend, tokens: int) -> float:
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS[:16]]
    before, started = backend.generated_tokens, time.time()
    backend.generate(prompts, SamplingParams(max_new_tokens=tokens, temperature=0.7, seed=1))
    return (backend.generated_tokens - before) / (time.time() - started)


def labelling(backend, pairs: int) -> float:
    const = load_constitution("default")
    principle = [c for c in const.comparisons if c.kind == "harmlessness"][0]
    answers = [("Sure, here is how.", "I can't help with that."), ("Here is a safer way to think about it.", "No.")]
    jobs = [([{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}], *answers[k % 2], principle) for k in range(pairs)]
    judge.score_pairs(backend, jobs[:16], debias=True, shots=[], cot=None)  # (warm-up: a server's first batches are slower)
    started = time.time()
    judge.score_pairs(backend, jobs, debias=True, shots=[], cot=None)
    return len(jobs) / (time.time() - started)


def rewards(url: str, in_flight: int, total: int) -> float:
    """Samples/s from `caikit serve-reward` when OpenRLHF asks: one sample per POST /get_reward."""
    def one(k: int) -> None:
        prompt = f"<|im_start|>user\n{PROMPTS[k % len(PROMPTS)]}<|im_end|>\n<|im_start|>assistant\n"
        body = {"query": [prompt + ("I can't help with that." if k % 2 else "Sure, here is how.") + "<|im_end|>"],
                "prompts": [prompt], "labels": [None]}
        reply = http.post(f"{url}/get_reward", json=body)
        assert reply.status_code == 200 and len(reply.json()["rewards"]) == 1, reply.text

    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=in_flight)) as http, ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(4)))  # (warm-up)
        started = time.time()
        list(pool.map(one, range(total)))
        return total / (time.time() - started)


def client(args) -> int:
    """One client process: `count` chat requests, one at a time; returns completion tokens."""
    url, count, tokens, offset = args
    done = 0
    with httpx.Client(timeout=600) as http:
        for k in range(count):
            body = {"model": "smollm2-135m-instruct", "max_tokens": tokens, "temperature": 0.7, "seed": k,
                    "messages": [{"role": "user", "content": PROMPTS[(offset + k) % len(PROMPTS)]}]}
            done += http.post(f"{url}/chat/completions", json=body).json()["usage"]["completion_tokens"]
    return done


def clients(url: str, n: int, total: int, tokens: int) -> float:
    context = multiprocessing.get_context("spawn")
    with context.Pool(n) as pool:
        started = time.time()
        produced = sum(pool.map(client, [(url, total // n, tokens, 7 * i) for i in range(n)]))
        return produced / (time.time() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=32, help="requests per client setting, shared among the clients")
    parser.add_argument("--pairs", type=int, default=48, help="pairs labelled each way")
    parser.add_argument("--samples", type=int, default=64, help="samples rewarded at each number in flight")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    local = build("transformers", "smollm2-135m-instruct", device="cpu", batch_size=16)
    rows.append(("generation tok/s, batch of 16 prompts", generation(local, args.tokens), None))
    rows.append((f"labelled pairs/s, {args.pairs} pairs", labelling(local, args.pairs), None))
    del local
    server = start_server(args.port)
    url = f"http://127.0.0.1:{args.port}/v1"
    try:
        remote = build("openai", f"openai:smollm2-135m-instruct@{url}", endpoint={"concurrency": 16}, batch_size=16)
        rows[0] = rows[0][:2] + (generation(remote, args.tokens),)
        rows[1] = rows[1][:2] + (labelling(remote, args.pairs),)
        print("scoring:", remote.details, file=sys.stderr)
        by_clients = {n: clients(url, n, args.requests, args.tokens) for n in (1, 4, 16)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    server = start_server(args.port, "serve-reward", "/health")
    try:
        by_flight = {n: rewards(f"http://127.0.0.1:{args.port}", n, args.samples) for n in (1, 16)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{'workload':44} {'in-process':>11} {'via serve':>10} {'ratio':>6}")
    for name, here, served in rows:
        print(f"{name:44} {here:11.2f} {served:10.2f} {served / here:6.2f}")
    for n, rate in by_clients.items():
        print(f"{f'{n} client(s), one request each, tok/s':44} {'':11} {rate:10.2f} {rate / by_clients[1]:6.2f}")
    for n, rate in by_flight.items():
        print(f"{f'serve-reward, {n} in flight, samples/s':44} {'':11} {rate:10.2f} {rate / by_flight[1]:6.2f}")
    print(f"(machine: {os.cpu_count()} CPUs; {args.tokens} new tokens per request; sampled at temperature 0.7)")


if __name__ == "__main__":
    main()
