"""`accelerate launch --num_processes 2` runs caikit's training stages unchanged on CPUs (gloo): both
processes train, one model is written, and it loads.

(accelerate's `--cpu` flag launches a single process unless MPI is set up, so two CPU processes are
started with its torchrun launcher, `--multi_gpu`, and `--device cpu` makes them train on CPUs.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from test_pm import toy_rows, write
from test_sft import write_examples


def launch(*args, tmp_path):
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    command = [accelerate, "launch", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--multi_gpu", "-m", "caikit.cli", *map(str, args)]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "train-pm"])
def test_two_processes_train_one_model(stage, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    data = write_examples(tmp_path / "data.jsonl", repeat=4) if stage == "sft" else write(tmp_path / "data.jsonl", toy_rows(16))
    base = ["--base-model", tiny_model]
    out = tmp_path / "out"
    done = launch(stage, "-i", data, *base, "-o", out, "--max-steps", 3, "--batch-size", 2, "--device", "cpu", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["processes"] == 2 and report["metrics"]["steps"] == 3
    assert not (tmp_path / "out.tmp").exists() and not list(out.rglob("*.bin"))
    assert done.stderr.count(f"caikit {stage} -> ") == 1, "one process reports"
    loader = AutoModelForCausalLM if stage == "sft" else AutoModelForSequenceClassification
    trained, base = loader.from_pretrained(out).state_dict(), loader.from_pretrained(tiny_model).state_dict()
    assert trained.keys() == base.keys()
    moved = [k for k, v in trained.items() if "score" not in k and not torch.equal(v, base[k])]  # (a PM's head starts random)
    assert moved, "the saved weights are the trained ones, not the base model's"
