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
