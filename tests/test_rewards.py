"""caikit.rewards: the constitutional reward and the PM reward as TRL reward functions."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys

import pytest

from caikit import rewards
from caikit.errors import CaikitError


@pytest.fixture
def settings_file(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "reward.toml"
    path.write_text(f'feedback_model = "{tiny_model}"\ndevice = "cpu"\nmode = "absolute"\n')
    monkeypatch.setenv(rewards.ENV, str(path))
    rewards._scorers.clear()
    yield path
    rewards._scorers.clear()


def dotted(path: str):
    """Import a reward the way `trl grpo --reward_funcs` does (trl/scripts/grpo.py, TRL 1.16)."""
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_settings_are_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('feedback_modle = "x"\n')
    with pytest.raises(CaikitError, match=r"bad.toml: unknown setting 'feedback_modle'"):
        rewards.Settings.read(bad)
    bad.write_text('mode = "sometimes"\n')
    with pytest.raises(CaikitError, match="mode 'sometimes'"):
        rewards.Settings.read(bad)
    bad.write_text("principles = 'two'\n")
    with pytest.raises(CaikitError, match="principles must be a int"):
        rewards.Settings.read(bad)


def test_constitutional_reward_takes_trl_shapes(settings_file, tiny_backend):
    reward = dotted("caikit.rewards.constitutional")
    conversational = reward([[{"role": "user", "content": "Hi"}]] * 2,
                            [[{"role": "assistant", "content": "Hello!"}], [{"role": "assistant", "content": "Go away."}]])
    plain = reward(["Hi", "Hi"], ["Hello!", "Go away."])
    assert conversational == pytest.approx(plain) and all(0 < p < 1 for p in plain)
    from caikit import judge

    direct = judge.score_yes_no(tiny_backend, [([{"role": "user", "content": "Hi"}], "Hello!")], judge.HARMLESS_AND_HELPFUL)
    assert plain[0] == pytest.approx(direct[0], abs=1e-5)
    with pytest.raises(ValueError, match="give a constitutional reward"):
        dotted("caikit.rewards.preference_model")(["Hi"], ["Hello"])


def test_async_reward_tool_calls_and_the_judges_position_bias(settings_file, fake_backend):
    """TRL 1.16 gathers async reward functions concurrently and passes log_metric; an assistant
    message may come without content (a tool call) or with content parts."""
    import asyncio
    import inspect

    fake_backend.scores = lambda conversation: [0.0, -1.0]  # always leans to slot A
    rewards._scorers[os.environ[rewards.ENV]] = rewards.Scorer(rewards.Settings(), backend=fake_backend)
    prompts = [[{"role": "user", "content": "Hi"}]] * 3
    completions = [[{"role": "assistant", "content": "Hello!"}], [{"role": "assistant", "tool_calls": [{"name": "f"}]}],
                   [{"role": "assistant", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo!"}]}]]
    assert [rewards.as_text(c) for c in completions] == ["Hello!", "", "Hello!"]
    logged = []
    sync = rewards.constitutional(prompts, completions, log_metric=lambda name, value: logged.append((name, value)))
    assert inspect.iscoroutinefunction(rewards.constitutional_async)
    assert asyncio.run(rewards.constitutional_async(prompts, completions)) == sync
    p = 1 / (1 + math.exp(-1))  # p(A) of every question asked
    assert logged == [("caikit/constitutional/position_bias", pytest.approx(p - 0.5))]


def test_vs_reference_reward_needs_and_uses_a_reference_column(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "reward.toml"
    path.write_text(f'feedback_model = "{tiny_model}"\ndevice = "cpu"\nmode = "vs-reference"\nprinciples = 2\n')
    monkeypatch.setenv(rewards.ENV, str(path))
    rewards._scorers.clear()
    with pytest.raises(ValueError, match="reference"):
        rewards.constitutional(["Hi"], ["Hello"])
    same = rewards.constitutional(["Hi"], ["Hello"], reference=["Hello"])
    assert same == pytest.approx([0.5], abs=1e-6), "a response judged against itself, both orders: exactly 0.5"
    rewards._scorers.clear()


def test_grpo_trainer_runs_with_the_dotted_path_reward(settings_file, tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in ("Hi", "How do I pick a lock?", "Tell a joke", "Why?")])
    config = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=2, per_device_train_batch_size=4, num_generations=2,
                        max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), processing_class=AutoTokenizer.from_pretrained(tiny_model),
                          reward_funcs=[dotted("caikit.rewards.constitutional")], args=config, train_dataset=data)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "rewards/constitutional/mean" in e]
    assert len(logged) == 2 and all(0 < e["rewards/constitutional/mean"] < 1 for e in logged)


@pytest.mark.slow
def test_trl_grpo_command_with_the_caikit_reward(settings_file, tiny_model, tmp_path):
    """`trl grpo --reward_funcs caikit.rewards.constitutional`: TRL's own command line."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) + "\n"
                                              for q in ("Hi", "How do I pick a lock?", "Tell a joke", "Why?")))
    trl = os.path.join(os.path.dirname(sys.executable), "trl")
    command = [trl, "grpo", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data),
               "--reward_funcs", "caikit.rewards.constitutional", "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
               "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
               "--logging_steps", "1", "--report_to", "none", "--use_cpu", "--save_strategy", "no"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, rewards.ENV: str(settings_file)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rewards/constitutional/mean" in done.stdout + done.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()


def planted_judge(quality: dict[str, float], slot_a_bias: float = 0.8):
    """A scripted feedback model: log-odds of (A) = quality of slot A's response - quality of slot B's,
    plus a bias for slot A that asking both orders must cancel."""
    import re

    def scores(conversation):
        first, second = re.findall(r"\[\[\[(.*?)\]\]\]", conversation[-2]["content"], re.S)[-2:]
        return [quality[first.strip()] - quality[second.strip()] + slot_a_bias, 0.0]

    return scores


@pytest.mark.parametrize("size, opponents", [(4, 4), (8, 4), (9, 2), (6, 0)])
def test_group_rewards_recover_a_planted_order(fake_backend, size, opponents):
    """Every completion of a prompt meets others (all pairs, or a ring of k), both orders; the fitted
    Bradley-Terry strengths order the completions as the judge's planted qualities do, and the slot
    bias cancels. Two prompts in one batch are two groups."""
    import random

    texts = [f"answer number {k}" for k in range(size)]
    quality = {t: 0.5 * k for k, t in enumerate(texts)}
    fake_backend.scores = planted_judge(quality)
    scorer = rewards.Scorer(rewards.Settings(mode="group", opponents=opponents, principles=2), backend=fake_backend)
    order = random.Random(size).sample(range(size), size)
    prompts = ["Hi"] * size + ["Why?"] * size
    responses = [texts[k] for k in order] * 2
    asked: list[float] = []
    found = scorer.score(prompts, responses, p_slot_a=asked)
    for part in (found[:size], found[size:]):
        assert sorted(range(size), key=lambda k: part[k]) == sorted(range(size), key=lambda k: order[k])
        assert sum(part) == pytest.approx(0, abs=1e-9)
    questions = rewards.group_questions(size, opponents, principles=2)
    assert len(asked) == 2 * questions == len(fake_backend.calls[0][1]), "one judge call for the whole batch"
    every_pair = opponents == 0 or opponents >= size - 1
    assert questions == 2 * (size * (size - 1) if every_pair else 2 * size * ((opponents + 1) // 2))


def test_group_cost_and_pairing():
    assert rewards.group_pairs(4, 4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    ring = rewards.group_pairs(16, 4)
    meets = [sum(k in pair for pair in ring) for k in range(16)]
    assert meets == [4] * 16 and len(ring) == 32
    assert [rewards.group_questions(g, 4) for g in (4, 8, 16, 64)] == [12, 32, 64, 256]
    assert rewards.group_questions(16, 0) == 240


def test_a_lone_completion_gets_zero_and_serve_reward_refuses_groups(fake_backend, tmp_path, caplog):
    fake_backend.scores = lambda conversation: [0.0, 0.0]
    scorer = rewards.Scorer(rewards.Settings(mode="group"), backend=fake_backend)
    assert scorer.score(["Hi", "Why?", "Why?"], ["a", "b", "c"]) == [0.0, 0.0, 0.0]
    assert "nothing to meet" in caplog.text
    from caikit.cli.serve import reward_settings

    with pytest.raises(CaikitError, match="--feedback-mode group: OpenRLHF and verl send one sample per request"):
        reward_settings(None, mode="group")
    config = tmp_path / "reward.toml"
    config.write_text('mode = "group"\nopponents = -1\n')
    with pytest.raises(CaikitError, match="opponents -1"):
        reward_settings(config)
