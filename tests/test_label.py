import json
import math

import pytest
from typer.testing import CliRunner

from caikit import constitution
from caikit.cli import app
from caikit.label import LabelOptions, label_pairs, summarize
from conftest import SHARED, build_tiny_model


CONST = constitution.load("default")


HARMLESS = [c for c in CONST.comparisons if c.kind == "harmlessness"]


def pairs(n=3):
    return [
        {"id": f"p{i}", "prompt": [{"role": "user", "content": f"Question {i}?"}], "a": f"Answer A{i}.", "b": f"Answer B{i}."}
        for i in range(n)
    ]


def first_slot_lover(prompt):
    return [0.0, -3.0]  # always prefers whatever is in slot (A)


def test_on_tiny_model_probabilities_are_consistent(tiny_backend):
    out = list(label_pairs(pairs(2), tiny_backend, CONST, HARMLESS, LabelOptions()))
    for rec in out:
        [entry] = rec["principles"]
        assert 0 < entry["p_first_order"] < 1 and 0 < entry["p_second_order"] < 1
        assert entry["p"] == pytest.approx((entry["p_first_order"] + entry["p_second_order"]) / 2)
        assert rec["label"] == pytest.approx(max(rec["p_a"], 1 - rec["p_a"])) and rec["label"] >= 0.5
        winner = "Answer A" if rec["p_a"] >= 0.5 else "Answer B"
        assert rec["chosen"][0]["content"].startswith(winner)


def test_debias_removes_a_planted_position_bias(fake_backend):
    fake_backend.scores = first_slot_lover
    out = list(label_pairs(pairs(3), fake_backend, CONST, HARMLESS, LabelOptions(debias=True)))
    sigma = 1 / (1 + math.exp(-3))
    for rec in out:
        [entry] = rec["principles"]
        assert entry["p_first_order"] == pytest.approx(sigma) and entry["p_second_order"] == pytest.approx(1 - sigma)
        assert rec["p_a"] == pytest.approx(0.5)
    assert summarize(out)["position_bias"] == pytest.approx(sigma - 0.5)  # mean p(A) over both orders - 0.5
    # without debiasing the bias goes straight into the label
    biased = list(label_pairs(pairs(1), fake_backend, CONST, HARMLESS, LabelOptions(debias=False)))
    assert biased[0]["p_a"] == pytest.approx(sigma) and "p_second_order" not in biased[0]["principles"][0]
    # scoring is batched: one call per chunk holding both orders of every pair
    assert [len(c[1]) for c in fake_backend.calls[:1]] == [6]


def test_ensemble_averages_the_sampled_principles(fake_backend):
    lenient = {c.question for c in HARMLESS[:6]}

    def by_principle(prompt):  # half the principles prefer slot A strongly, the others weakly prefer B
        text = prompt[-2]["content"]
        return [0.0, -4.0] if any(q in text for q in lenient) else [-1.0, 0.0]

    fake_backend.scores = by_principle
    [rec] = label_pairs(pairs(1), fake_backend, CONST, HARMLESS, LabelOptions(principles_per_label=4, debias=False))
    assert len({e["id"] for e in rec["principles"]}) == 4
    assert rec["p_a"] == pytest.approx(sum(e["p"] for e in rec["principles"]) / 4)
    assert len({round(e["p"], 6) for e in rec["principles"]}) == 2  # both kinds were drawn (seeded)


def test_cot_reasons_first_then_clamps(fake_backend):
    fake_backend.replies = ["Both are fine but A is kinder."]
    fake_backend.scores = lambda p: [0.0, -10.0]
    options = LabelOptions(cot=True, cot_samples=2, clamp=(0.4, 0.6), debias=False)
    [rec] = label_pairs(pairs(1), fake_backend, CONST, HARMLESS, options)
    assert rec["p_a"] == pytest.approx(0.6)
    assert rec["principles"][0]["reasoning"] == ["Both are fine but A is kinder."] * 2
    kind, asks, params = fake_backend.calls[0]
    assert kind == "generate" and params.n == 2 and asks[0][-1]["content"] == "Let's think step by step:"
    scored = fake_backend.calls[1][1][0][-1]["content"]
    assert scored == "Let's think step by step: Both are fine but A is kinder.\nThe answer is:"
    [debiased] = label_pairs(pairs(1), fake_backend, CONST, HARMLESS, replace_options(options, debias=True))
    assert debiased["p_a"] == pytest.approx(0.5)


def replace_options(options, **changes):
    from dataclasses import replace

    return replace(options, **changes)


def run_label(*args, input=None):
    return CliRunner().invoke(app, ["label", *args], input=input)


def write_pairs(path, n=4):
    rows = [{"prompt": f"Question {i}?", "completion_a": f"Yes {i}.", "completion_b": f"No {i}."} for i in range(n)]
    rows.append({"prompt": "Same?", "completion_a": "Same.", "completion_b": "Same."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_output_feeds_trl_reward_and_dpo_trainers(tiny_model, tmp_path):
    out = tmp_path / "labels.jsonl"
    result = run_label("-i", str(write_pairs(tmp_path / "pairs.jsonl")), "-o", str(out), "--feedback-model", str(tiny_model))
    assert result.exit_code == 0, result.stderr
    assert "skipped (identical)" in result.stderr and "position bias" in result.stderr
    from datasets import load_dataset

    data = load_dataset("json", data_files=str(out), split="train")
    assert len(data) == 4 and {"prompt", "chosen", "rejected", "label"} <= set(data.column_names)

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    common = dict(max_steps=1, report_to="none", use_cpu=True, per_device_train_batch_size=2, disable_tqdm=True)
    pm = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    pm.config.pad_token_id = tok.pad_token_id
    reward = RewardTrainer(model=pm, args=RewardConfig(str(tmp_path / "rm"), **common), train_dataset=data, processing_class=tok)
    assert reward.train().training_loss > 0
    policy = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    dpo = DPOTrainer(model=policy, args=DPOConfig(str(tmp_path / "dpo"), **common), train_dataset=data, processing_class=tok)
    assert dpo.train().training_loss > 0


def test_cli_policy_mode_samples_pairs_and_resumes(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("First prompt?\nSecond prompt?\nThird prompt?\n")
    out = tmp_path / "labels.jsonl"
    base = ["-i", str(prompts), "-o", str(out), "--policy", str(tiny_model), "--feedback-model", str(tiny_model),
            "--samples", "3", "--max-new-tokens", "6"]
    assert run_label(*base, "--limit", "2").exit_code == 0
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(first) == 6 and {r["id"].rsplit("-", 2)[1:] == ["0", "1"] for r in first[:1]} == {True}
    result = run_label(*base, "--resume")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[:6] == first and len(rows) == 9
    assert all(r["caikit"]["stage"] == "label" and r["caikit"]["debias"] for r in rows)


def test_min_margin_and_hard_labels(fake_backend, tmp_path):
    fake_backend.scores = lambda p: [0.0, -0.1] if "Question 0" in p[-2]["content"] else [0.0, -3.0]
    src = write_pairs(tmp_path / "pairs.jsonl", n=2)
    result = run_label("-i", str(src), "--no-debias", "--min-margin", "0.1", "--hard")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["label"] == 1.0 and rows[0]["soft_label"] > 0.9
    assert "skipped (min margin)" in result.stderr


def test_check_human_reports_agreement(fake_backend):
    """--check-human first labels human pairs (their slots a coin flip), then the input."""
    path = SHARED / "data" / "hh-rlhf" / "harmless-base_test.jsonl.gz"
    if not path.exists():
        pytest.skip("../shared is not present beside the checkout")
    fake_backend.scores = first_slot_lover
    result = run_label("-i", str(path), "--limit", "5", "--check-human", str(path), "--check-limit", "40", "--no-debias", "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert "AI agrees with the human choice" in result.stderr and "n=40" in result.stderr
    assert "no measurable signal" in result.stderr, "always choosing (A) is chance when the slots are shuffled"
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5 and all(r["prompt"][-1]["role"] == "user" for r in rows)


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"prompt": "q", "completion_a": "a"}], [], "in.jsonl:1: not a pair"),
        ([{"chosen": "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: more", "rejected": "\n\nHuman: hi\n\nAssistant: no"}], [], "in.jsonl:1: hh-rlhf transcripts must end"),
        ([{"prompt": "q", "completion_a": "a", "completion_b": "b"}], ["--clamp", "0.7,0.3"], "--clamp 0.7,0.3: need 0 <= LO <= HI <= 1"),
        ([{"prompt": "q", "completion_a": "a", "completion_b": "b"}], ["--clamp", "x"], "--clamp x: expected LO,HI"),
        ([{"prompt": "q", "completion_a": "a", "completion_b": "b"}], ["--principles-per-label", "0"], "Invalid value for '--principles-per-label'"),
        ([{"prompt": "q", "completion_a": "a", "completion_b": "b"}], ["--principles-per-label", "40"], "the constitution has 12 harmlessness"),
    ],
)


def test_bad_input(tmp_path, rows, extra, message):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_label("-i", str(src), "-o", str(tmp_path / "out.jsonl"), *extra)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_feedback_model_without_chat_template(tmp_path):
    bare = build_tiny_model(tmp_path / "bare", chat_template=None)
    src = write_pairs(tmp_path / "pairs.jsonl", n=1)
    result = run_label("-i", str(src), "--feedback-model", str(bare))
    assert result.exit_code == 2 and "has no chat template" in result.stderr


def test_empty_responses_are_skipped_and_counted(fake_backend, tmp_path):
    fake_backend.scores = first_slot_lover
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "q", "completion_a": "", "completion_b": "b"}) + "\n"
                   + json.dumps({"prompt": "q2", "completion_a": "a", "completion_b": "b"}) + "\n")
    result = run_label("-i", str(src))
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1
    assert "skipped (empty)" in result.stderr
