"""On a CUDA device: the lean engine computes what the plain loop computes, in float32 and bfloat16;
choice scores agree; one training step runs there. Skipped where torch sees no GPU (they run in
benchmarks/gpu_check.py on a lent GPU machine)."""

import json

import pytest
import torch

from caikit import models
from caikit.backends import SamplingParams
from caikit.backends.hf import TransformersBackend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: these run on a GPU machine")

PROMPTS = [[{"role": "user", "content": f"Question {i}: how would you {verb} it? " * (1 + i % 3)}]
           for i, verb in enumerate(["fix", "break", "sell", "open", "hide", "paint", "lift"])]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_lean_engine_on_cuda_gives_the_plain_loops_greedy_texts(tiny_model, dtype):
    loaded = models.load(str(tiny_model), device="cuda", dtype=dtype)
    lean, plain = TransformersBackend(loaded, batch_size=3), TransformersBackend(loaded, batch_size=3, engine="plain")
    assert lean.engine == "lean" and next(loaded.model.parameters()).is_cuda
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    same = sum(a == b for a, b in zip(lean.generate(PROMPTS, greedy), plain.generate(PROMPTS, greedy)))
    # float32 must match exactly; bfloat16 may round one near-tie differently between the two ways
    assert same == len(PROMPTS) if dtype == "float32" else same >= len(PROMPTS) - 1
    sampled = lean.generate(PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, seed=3))
    assert sampled == lean.generate(PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, seed=3))


def test_choice_scores_on_cuda_equal_the_plain_ones_and_the_cpus(tiny_model):
    on_gpu = models.load(str(tiny_model), device="cuda", dtype="float32")
    lean, plain = TransformersBackend(on_gpu), TransformersBackend(on_gpu, engine="plain")
    cpu = TransformersBackend(models.load(str(tiny_model), device="cpu", dtype="float32"))
    choices = [" (A)", " (B)", " a longer answer"]
    found, expected, reference = (b.score_choices(PROMPTS, choices) for b in (lean, plain, cpu))
    pairs = [(a, b) for x, y in zip(found, expected) for a, b in zip(x, y)] + [(a, b) for x, y in zip(found, reference) for a, b in zip(x, y)]
    assert max(abs(a - b) for a, b in pairs) < 1e-3


def test_one_sft_step_on_cuda(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from caikit.cli import app

    data = tmp_path / "sl.jsonl"
    rows = [{"id": f"r{i}", "prompt": p, "completion": [{"role": "assistant", "content": "I would rather not."}]} for i, p in enumerate(PROMPTS)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["sft", "-i", str(data), "-o", str(tmp_path / "out"), "--base-model", str(tiny_model),
                                      "--max-steps", "1", "--batch-size", "2", "--device", "cuda", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "caikit_train.json").read_text())
    assert report["metrics"]["steps"] == 1 and report["metrics"]["final_loss"] > 0
