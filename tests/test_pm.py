import json
import math
import random

import pytest
import torch
from typer.testing import CliRunner

from caikit import pm
from caikit.cli import app
from conftest import SHARED, wilson

POLITE = ["Thank you for asking, I am happy to help you with that.", "Of course, here is a kind and careful answer.",
          "Good question, let me explain it gently.", "I would be glad to help, thanks for your patience."]
RUDE = ["Shut up, that is a stupid question.", "Go away, nobody cares about you.",
        "What an idiot, figure it out yourself.", "Stop bothering me with garbage."]


def toy_rows(n=48, seed=0, soft=False):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"prompt": [{"role": "user", "content": f"Can you help me with task {i}?"}],
               "chosen": [{"role": "assistant", "content": rng.choice(POLITE)}],
               "rejected": [{"role": "assistant", "content": rng.choice(RUDE)}]}
        if soft:
            row["label"] = rng.choice([0.7, 0.8, 0.9, 1.0])
        rows.append(row)
    return rows


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(*args):
    return CliRunner().invoke(app, ["train-pm", *args])


def test_soft_label_loss_equals_the_formula(tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    rows = toy_rows(4, soft=True)
    Trainer, Collator = pm.soft_reward_trainer()
    args = RewardConfig(str(tmp_path / "w"), report_to="none", use_cpu=True, max_steps=1, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                      data_collator=Collator(pad_token_id=tok.pad_token_id))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    labels = batch["label"].clone()
    assert labels.tolist() == pytest.approx([r["label"] for r in rows])
    model.eval()
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = rewards[:4], rewards[4:]
    by_hand = []
    for c, r, p in zip(chosen.tolist(), rejected.tolist(), labels.tolist()):
        d = c - r
        by_hand.append(-(p * math.log(1 / (1 + math.exp(-d))) + (1 - p) * math.log(1 / (1 + math.exp(d)))))
    assert loss.item() == pytest.approx(sum(by_hand) / 4, rel=1e-5)
    # a hard label is TRL's usual -log sigma(d)
    hard = pm.soft_preference_loss(torch.tensor([0.3]), torch.tensor([1.0]))
    assert hard.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.3))))


def test_pm_learns_a_separable_preference(tiny_model, tmp_path):
    data = write(tmp_path / "toy.jsonl", toy_rows(60, soft=True))
    out = tmp_path / "pm"
    result = train("--data", str(data), "-o", str(out), "--base-model", str(tiny_model), "--epochs", "6",
                   "--lr", "2e-3", "--batch-size", "8", "--eval-split", "0.2", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    held = report["metrics"]["held_out"]
    assert held["pairs"] == 12 and held["accuracy"] >= 0.9 and held["mean_margin"] > 0
    assert 0 <= held["ece"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["pad_token_id"] is not None and config["architectures"] == ["LlamaForSequenceClassification"]
    # the saved PM scores on its own: padding a conversation in a batch does not change its reward
    model = pm.PreferenceModel(out, device="cpu", batch_size=2)
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": POLITE[0]}]
    long = [{"role": "user", "content": "Hi " * 40}, {"role": "assistant", "content": RUDE[0]}]
    alone = model.rewards([short])[0]
    assert model.rewards([long, short])[1] == pytest.approx(alone, abs=1e-4)


def test_hh_transcripts_are_hard_labels_and_weights_apply(tmp_path):
    hh = tmp_path / "hh.jsonl"
    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: good {i}", "rejected": f"\n\nHuman: q{i}\n\nAssistant: bad {i}"} for i in range(4)]
    write(hh, rows)
    soft = write(tmp_path / "soft.jsonl", toy_rows(10, soft=True))
    mixed, described = pm.mixed_preferences([(str(soft), 1.0), (str(hh), 0.5)], 0, tmp_path)
    assert len(mixed) == 12 and described[1]["used"] == 2 and described[1]["hard_labels"] == 4
    human = [r for r in mixed if r["chosen"][0]["content"].startswith("good")]
    assert len(human) == 2 and all(r["label"] == 1.0 and r["prompt"][-1]["role"] == "user" for r in human)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "q", "chosen": "a", "rejected": "b", "label": 1.5}] * 3, "d.jsonl:1: label 1.5 is not a probability"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b", "label": "high"}] * 3, "d.jsonl:1: label 'high' is not a probability"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}], "-i/--input: need at least 2 preference records, got 1"),
        ([{"chosen": "\n\nHuman: hi\n\nAssistant: x\n\nHuman: more", "rejected": "\n\nHuman: hi\n\nAssistant: x"}] * 2, "d.jsonl:1: hh-rlhf transcripts must end"),
    ],
)
def test_bad_input(tmp_path, rows, message):
    data = write(tmp_path / "d.jsonl", rows)
    result = train("--data", str(data), "-o", str(tmp_path / "pm"))
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "pm").exists() and not (tmp_path / "pm.tmp").exists()


def test_eval_pm_on_the_papers_438_file(tiny_pm):
    path = SHARED / "data" / "anthropic-cai" / "evals" / "438HHHEvaluations.jsonl"
    if not path.exists():
        pytest.skip("../shared is not present beside the checkout")
    result = CliRunner().invoke(app, ["eval", "pm", "--pm", str(tiny_pm), "--data", str(path), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    hits = results["accuracy"] * 438
    assert results["n"] == 438 and hits == pytest.approx(round(hits)) and results["ci95"] == pytest.approx(wilson(round(hits), 438))


def test_eval_pm_bigbench_and_subsets(tiny_pm, tmp_path):
    folder = tmp_path / "hhh"
    folder.mkdir()
    (folder / "honest.json").write_text(json.dumps({"examples": [
        {"input": "Human: Is the earth flat?\n\nAssistant:", "target_scores": {"No, it is round.": 1, "Yes.": 0, "Maybe.": 0}},
        {"input": "Human: 2+2?\n\nAssistant:", "target_scores": {"4": 1, "5": 0}},
    ]}))
    write(folder / "mixed.jsonl", [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "category": "harmless"},
        {"prompt": "q2", "chosen": "good", "rejected": "bad", "category": "helpful"},
    ])
    result = CliRunner().invoke(app, ["eval", "pm", "--pm", str(tiny_pm), "--data", str(folder), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    assert results["n"] == 4 and set(results["subsets"]) == {"honest", "harmless", "helpful"}


def test_eval_pm_is_precise_about_what_it_can_score(tiny_model, tmp_path):
    result = CliRunner().invoke(app, ["eval", "pm", "--pm", str(tiny_model), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "no .json/.jsonl files" in result.stderr
    (tmp_path / "x.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    result = CliRunner().invoke(app, ["eval", "pm", "--pm", str(tiny_model), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "not a one-logit sequence-classification model" in result.stderr


def test_long_pairs_keep_their_ends_and_still_teach(tiny_model, tmp_path):
    """TRL drops pairs longer than max_length; caikit keeps each one's last tokens, where the responses differ."""
    rows = toy_rows(60, soft=True)
    for row in rows:
        row["prompt"][0]["content"] = "Some background first. " * 30 + row["prompt"][0]["content"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    full = pm.encode(tok, [rows[0]["prompt"] + rows[0]["chosen"]], 10_000)[0]
    encoded = pm.encode_pairs({k: [r[k] for r in rows[:3]] for k in ("prompt", "chosen", "rejected")}, tok, 40)
    assert encoded["cut"] == [True] * 3 and len(full) > 40
    assert encoded["chosen_ids"][0] == full[-40:]
    data = write(tmp_path / "long.jsonl", rows)
    out = tmp_path / "pm"
    result = train("--data", str(data), "-o", str(out), "--base-model", str(tiny_model), "--epochs", "10", "--max-length", "40",
                   "--lr", "2e-3", "--batch-size", "8", "--eval-split", "0.2", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["examples"] == {"train": 48, "eval": 12, "truncated": 60}
    assert report["hyperparameters"]["gradient_checkpointing"] is False  # off on CPU unless asked
    assert report["metrics"]["held_out"]["accuracy"] >= 0.9


def test_rewards_through_the_lean_engine_equal_the_models_own_forward(tiny_pm, monkeypatch):
    """The PM scores on caikit's engine (a pair's shared prompt computed once) exactly what its own
    padded forward gives, including where that forward reads a row that ends in padding tokens."""
    from caikit.backends import decode, rows as batching
    from caikit.preference_model import PreferenceModel, encode

    scorer = PreferenceModel(tiny_pm, device="cpu", batch_size=3)
    assert scorer._lean is not None
    rows = toy_rows(7)
    for row in rows:
        row["prompt"][0]["content"] = "Some background first. " * 4 + row["prompt"][0]["content"]
    convs = [r["prompt"] + r[side] for r in rows for side in ("chosen", "rejected")] + [[{"role": "user", "content": "short"}]]
    ids = encode(scorer.tokenizer, convs, scorer.max_length)
    assert batching.groups(sorted(ids))[0]  # the two responses of a pair share a beginning the engine computes once
    lean, plain = scorer.rewards(convs), scorer._plain_rewards(ids)
    assert max(abs(a - b) for a, b in zip(lean, plain)) < 1e-4 and len({round(x, 4) for x in lean}) > 3
    pad = scorer.tokenizer.pad_token_id
    padded = [ids[0] + [pad, pad], ids[1]]
    assert max(abs(a - b) for a, b in zip(scorer._lean_rewards(scorer._lean, padded), scorer._plain_rewards(padded))) < 1e-4
    monkeypatch.setattr(decode.Engine, "forward", lambda self, *a, **k: torch.zeros(2, 8))
    fallback = PreferenceModel(tiny_pm, device="cpu", batch_size=3)  # an engine that computes something else is not used
    assert fallback._lean is None and max(abs(a - b) for a, b in zip(fallback.rewards(convs), plain)) < 1e-6


def test_the_same_seed_trains_the_same_preference_model(tiny_model, tmp_path):
    """The one-logit head is new weights: drawn from --seed, so two runs give the same PM."""
    from safetensors.torch import load_file

    data = write(tmp_path / "pairs.jsonl", toy_rows(8, soft=True))
    heads = []
    for run in ("a", "b"):
        result = train("--data", str(data), "-o", str(tmp_path / run), "--base-model", str(tiny_model), "--max-steps", "1",
                       "--eval-split", "0", "--seed", "3", "--device", "cpu", "-q")
        assert result.exit_code == 0, result.stderr
        heads.append(load_file(str(tmp_path / run / "model.safetensors"))["score.weight"])
    assert torch.equal(heads[0], heads[1])
