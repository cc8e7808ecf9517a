import json

import pytest
from typer.testing import CliRunner

from caikit import models, sft, training
from caikit.backends import SamplingParams
from caikit.backends.hf import TransformersBackend
from caikit.cli import app

FACTS = [
    ("What colour is the sky in the song?", "The sky in the song is bright green."),
    ("Name the captain of the ship.", "The captain of the ship is Ada Quill."),
    ("What does the robot eat?", "The robot eats copper bolts for breakfast."),
    ("Where is the hidden key?", "The hidden key is under the blue stone."),
]


def write_examples(path, pairs=FACTS, repeat=1):
    rows = [
        {"id": f"r{k}-{i}", "prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
        for k in range(repeat)
        for i, (q, a) in enumerate(pairs)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(*args):
    return CliRunner().invoke(app, ["sft", *args])


def test_completion_only_loss_masks_the_prompt(tiny_model, tmp_path):
    examples, _ = sft.mixed_dataset(str(write_examples(tmp_path / "d.jsonl")), [], 0, tmp_path)
    options = sft.SftOptions(base_model=str(tiny_model), max_steps=1, device="cpu")
    trainer, tokenizer, _, _ = sft.build_trainer(examples, tmp_path / "work", options)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        learned = [t for t, label in zip(ids, labels) if label != -100]
        assert all(label in (-100, t) for t, label in zip(ids, labels))
        text = tokenizer.decode(learned)
        assert text.startswith(tuple(a for _, a in FACTS)), text  # only the completion is learned ...
        assert "<|im_start|>user" not in text  # ... never the prompt
        assert labels[0] == -100


def test_full_finetune_memorizes_and_reloads(tiny_model, tmp_path):
    data = write_examples(tmp_path / "d.jsonl", repeat=4)
    out = tmp_path / "model"
    result = train("-i", str(data), "-o", str(out), "--base-model", str(tiny_model), "--max-steps", "30",
                   "--lr", "3e-3", "--batch-size", "8", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["metrics"]["final_loss"] < 0.5 * report["metrics"]["first_loss"]
    assert report["examples"]["train"] == 16 and report["data"][0]["sha256"] == training.sha256_file(data)
    assert {"config.json", "model.safetensors", "tokenizer.json", "caikit_train.json"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / "model.tmp").exists() and not list(tmp_path.glob(".model.data*"))  # nor its Arrow data
    backend = TransformersBackend.load(str(out), device="cpu")
    [answer] = backend.generate([[{"role": "user", "content": FACTS[2][0]}]], SamplingParams(max_new_tokens=12, temperature=0))
    assert answer.startswith("The robot eats")


def test_lora_trains_merges_and_keeps_adapter(tiny_model, tmp_path):
    data = write_examples(tmp_path / "d.jsonl", repeat=4)
    out = tmp_path / "lora"
    result = train("-i", str(data), "-o", str(out), "--base-model", str(tiny_model), "--lora", "--lora-r", "8",
                   "--max-steps", "30", "--lr", "1e-2", "--batch-size", "8", "--device", "cpu", "--keep-adapter", "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["hyperparameters"]["lora"]["r"] == 8
    assert report["metrics"]["final_loss"] < 0.7 * report["metrics"]["first_loss"]
    assert (out / "adapter" / "adapter_config.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"  # merged: a plain model, no adapter needed to load it
    loaded = models.load(str(out), device="cpu")
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())


def test_mix_proportions(tmp_path):
    main = write_examples(tmp_path / "main.jsonl", repeat=3)  # 12 records
    helpful = write_examples(tmp_path / "helpful.jsonl", pairs=[("Q?", "A.")] * 1 + [("Q2?", "B.")])
    rows, sources = sft.mixed_dataset(str(main), [(str(helpful), 0.5)], 0, tmp_path)
    assert len(rows) == 12 + 6 and sources[1]["used"] == 6 and sources[1]["records"] == 2
    assert sum(r["prompt"][0]["content"] in ("Q?", "Q2?") for r in rows) == 6
    (tmp_path / "again").mkdir()
    rows, _ = sft.mixed_dataset(str(main), [(str(helpful), 0.1)], 0, tmp_path / "again")
    assert len(rows) == 12 + 1


def test_crash_leaves_no_model_and_resume_continues(tiny_model, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    data = write_examples(tmp_path / "d.jsonl", repeat=2)
    out = tmp_path / "model"
    args = ["-i", str(data), "-o", str(out), "--base-model", str(tiny_model), "--max-steps", "6", "--save-steps", "2",
            "--batch-size", "2", "--device", "cpu", "-q"]

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("power cut")

    real = training.progress_callback
    monkeypatch.setattr(training, "progress_callback", lambda quiet: Crash())
    result = train(*args)
    assert result.exit_code == 1 and "power cut" in result.stderr
    assert not out.exists() and (tmp_path / "model.tmp" / "checkpoint-2").is_dir()
    monkeypatch.setattr(training, "progress_callback", real)
    result = train(*args, "--resume")
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["resumed_from"] == "checkpoint-2" and report["metrics"]["steps"] == 6
    assert not (tmp_path / "model.tmp").exists()


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("", [], "d.jsonl: no records"),
        ('{"prompt": "hi"}\n', [], "d.jsonl:1: not a prompt-completion record"),
        ('{"prompt": "hi", "completion": "yo"}\n', ["--mix", "h.jsonl:abc"], "--mix h.jsonl:abc: weight 'abc' is not a number"),
        ('{"prompt": "hi", "completion": "yo"}\n', ["--mix", "h.jsonl:-1"], "--mix h.jsonl:-1: weight must be a positive number"),
        ('{"prompt": "hi", "completion": "yo"}\n', ["--mix", "missing.jsonl:1"], "missing.jsonl: no such file"),
        ('{"prompt": "hi", "completion": "yo"}\n', ["--keep-adapter"], "--keep-adapter needs --lora"),
    ],
)
def test_bad_input(tmp_path, monkeypatch, content, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text(content)
    (tmp_path / "h.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    result = train("-i", "d.jsonl", "-o", "out", *extra)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    data = write_examples(tmp_path / "d.jsonl")
    result = train("-i", str(data), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.stderr
