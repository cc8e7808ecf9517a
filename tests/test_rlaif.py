import json
import math

import pytest
from typer.testing import CliRunner

from caikit import rewards, rlaif
from caikit.cli import app
from caikit.records import canonical

PROMPTS = "Tell me a story.\nWhat is the weather?\nHow are you?\nExplain cats.\n"


def short_answers(prompts, completions, **kwargs):
    """A planted reward: shorter is better."""
    return [-len(c[-1]["content"]) / 20 for c in completions]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(PROMPTS)
    return path


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_reward_rises_with_a_planted_reward(tiny_model, prompts_file, tmp_path, algo):
    options = rlaif.RlOptions(algo=algo, kl_coef=0.0, num_generations=4, max_new_tokens=16, lr=3e-2, max_steps=20,
                              batch_size=8, device="cpu")
    report = rlaif.run(str(tiny_model), tmp_path / "out", options, reward=short_answers, reward_description={"kind": "test"},
                       prompts=[(str(prompts_file), 1.0)], quiet=True)
    rewards = [h["reward"] for h in report["history"] if h["reward"] is not None]
    assert len(rewards) == 20
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2
    assert report["metrics"]["length_start"] is not None  # (no KL is logged at kl_coef 0)
    assert (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out.tmp").exists()


def test_cli_rloo_against_a_pm(tiny_model, tiny_pm, prompts_file, tmp_path):
    out = tmp_path / "rl"
    result = CliRunner().invoke(app, ["rlaif", "--policy", str(tiny_model), "--reward", str(tiny_pm),
                                      "--prompts", f"{prompts_file}:2", "--steps", "2", "--max-new-tokens", "8",
                                      "--device", "cpu", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["algo"] == "rloo" and report["reward"] == {"kind": "pm", "path": str(tiny_pm)}
    assert report["data"][0]["used"] == 8 and report["metrics"]["steps"] == 2
    assert [h["step"] for h in report["history"]] == [1, 2] and all(h["kl"] is not None for h in report["history"])


def test_cli_grpo_with_group_rewards(tiny_model, prompts_file, tmp_path):
    """`--feedback-mode group`: the feedback model compares the 4 completions of each prompt with each
    other; the rewards are Bradley-Terry strengths, mean 0 within every group, so TRL's mean reward is 0."""
    out = tmp_path / "rl"
    result = CliRunner().invoke(app, ["rlaif", "--policy", str(tiny_model), "--reward", f"feedback:{tiny_model}", "--algo", "grpo",
                                      "--feedback-mode", "group", "--opponents", "2", "-i", str(prompts_file), "--steps", "2",
                                      "--max-new-tokens", "8", "--device", "cpu", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["algo"] == "grpo" and report["reward"]["mode"] == "group" and report["reward"]["opponents"] == 2
    assert [h["step"] for h in report["history"]] == [1, 2]
    assert all(abs(h["reward"]) < 1e-6 for h in report["history"])


def test_pm_reward_scores_text_with_the_pms_own_template(tiny_pm):
    from caikit.preference_model import PreferenceModel

    pm = PreferenceModel(tiny_pm, device="cpu")
    reward = rewards.TrlReward(rewards.Scorer(rewards.Settings(pm=str(tiny_pm)), pm=pm))
    assert reward.__name__ == "pm"
    prompt = [{"role": "user", "content": "Hi"}]
    completion = [{"role": "assistant", "content": "Hello there."}]
    assert reward([prompt], [completion]) == pytest.approx(pm.rewards([prompt + completion]))


def test_direct_rlaif_reward_asks_score_choices_both_orders(fake_backend):
    prompt = [{"role": "user", "content": "How do I pick a lock?"}]
    references = {canonical(prompt): "I'd call a locksmith."}
    fake_backend.scores = lambda conv: [0.0, -1.0]  # always prefers the first slot a bit
    settings = rewards.Settings(mode="vs-reference", seed=1)
    reward = rewards.TrlReward(rewards.Scorer(settings, backend=fake_backend), references)
    [value] = reward([prompt], [[{"role": "assistant", "content": "Use a tension wrench."}]])
    kind, asks, choices = fake_backend.calls[0]
    assert kind == "score_choices" and choices == [" (A)", " (B)"] and len(asks) == 2
    first, second = asks[0][-2]["content"], asks[1][-2]["content"]
    assert first.index("Use a tension wrench.") < first.index("I'd call a locksmith.")
    assert second.index("I'd call a locksmith.") < second.index("Use a tension wrench.")
    p = 1 / (1 + math.exp(-1))
    assert value == pytest.approx((p + (1 - p)) / 2)  # position bias cancels: as good as the reference
    absolute = rewards.TrlReward(rewards.Scorer(rewards.Settings(mode="absolute"), backend=fake_backend))
    assert absolute([prompt], [[{"role": "assistant", "content": "x"}]]) == [pytest.approx(0.5)]  # bias cancels here too


def test_shorten_prompts_keeps_the_system_message_and_the_last_user_turn(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    turn = lambda role, text: {"role": role, "content": text}  # noqa: E731
    long = [turn("system", "Be kind."), turn("user", "word " * 50), turn("assistant", "reply " * 50), turn("user", "Last?")]
    rows = [{"prompt": list(long)}, {"prompt": [turn("user", "Short?")]}, {"prompt": [turn("user", "word " * 80)]}]
    assert rlaif.shorten_prompts(rows, tok, 48) == 1
    assert rows[0]["prompt"] == [long[0], long[3]]
    assert rows[1]["prompt"] == [turn("user", "Short?")] and len(rows[2]["prompt"]) == 1  # nothing to drop from one turn


def test_dpo_on_label_output(tiny_model, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"Q{i}?"}], "chosen": [{"role": "assistant", "content": "Kind answer."}],
             "rejected": [{"role": "assistant", "content": "Rude answer."}], "label": 0.8} for i in range(4)]
    rows.append({**rows[0], "label": 0.52})
    rows.append({**rows[1], "prompt": [{"role": "user", "content": "A very long question indeed. " * 20}]})
    rows.append({**rows[2], "prompt": [{"role": "user", "content": "An old question. " * 20}, {"role": "assistant", "content": "Old answer."},
                                       {"role": "user", "content": "New question?"}]})
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dpo"
    result = CliRunner().invoke(app, ["rlaif", "--algo", "dpo", "--policy", str(tiny_model), "--data", str(data),
                                      "--label-smoothing", "auto", "--min-margin", "0.1", "--steps", "2", "--max-length", "48", "--gradient-checkpointing",
                                      "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "caikit rlaif" in result.stderr  # the summary table (it once crashed on DPO's data rows)
    report = json.loads((out / "caikit_train.json").read_text())
    assert report["data"][0]["used"] == 6
    assert report["hyperparameters"]["gradient_checkpointing"] is True
    # the long multi-turn prompt loses its first exchange; the long single question still fills --max-length: TRL drops it
    assert report["hyperparameters"]["prompts_shortened"] == 1
    assert report["hyperparameters"]["pairs_trained"] == 5
    assert "1 of 6 pairs have a prompt" in result.stderr
    assert report["hyperparameters"]["label_smoothing"] == pytest.approx(0.2)
    assert report["metrics"]["steps"] == 2 and report["metrics"]["train_loss"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reward", "TINY", "--prompts", "PROMPTS"], "--reward TINY"),
        (["--reward", "PM", "--prompts", "EMPTY"], "no prompts found"),
        (["--reward", "PM", "--prompts", "PROMPTS", "--kl-coef", "-1"], "--kl-coef -1.0: must be >= 0"),
        (["--prompts", "PROMPTS"], "--algo rloo needs --reward"),
        (["--reward", "PM"], "--algo rloo needs -i/--input"),
        (["--algo", "ppo"], "--algo ppo: choose rloo, grpo or dpo"),
        (["--algo", "dpo"], "--algo dpo needs -i/--input"),
        (["--reward", "PM", "--prompts", "PROMPTS", "--vllm-server-url", "http://x:8000"], "--vllm-server-url needs --use-vllm"),
        (["--reward", "PM", "--prompts", "PROMPTS", "--temperature", "0"], "--temperature 0.0: rollouts are sampled"),
        (["--reward", "PM", "--prompts", "PROMPTS", "--use-vllm"], "--use-vllm: vLLM is not installed"),
        (["--reward", "PM", "--prompts", "PROMPTS", "--use-vllm", "--vllm-mode", "remote"], "--vllm-mode remote: unknown mode"),
    ],
)
def test_bad_input(tiny_model, tiny_pm, prompts_file, tmp_path, args, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    names = {"TINY": str(tiny_model), "PM": str(tiny_pm), "PROMPTS": str(prompts_file), "EMPTY": str(empty)}
    args = [names.get(a, a) for a in args]
    message = message.replace("TINY", str(tiny_model))
    result = CliRunner().invoke(app, ["rlaif", "--policy", str(tiny_model), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
