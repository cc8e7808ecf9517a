"""`caikit rlaif`: reinforcement learning from AI feedback, with TRL's RLOO or GRPO (online, with a KL
penalty to the starting policy), or DPO on `label` output (offline).

The paper ran PPO against the preference model; TRL no longer ships PPO, and RLOO/GRPO optimize
the same KL-regularized objective with group baselines instead of a value model.

Rewards (`--reward`, a `caikit.rewards.Scorer` as TRL's reward function):
- `PM_DIR`: a preference model from `caikit train-pm`. Responses are decoded to text and scored with
  the PM's own tokenizer and chat template (never the policy's token ids), so the PM may use a
  different tokenizer than the policy.
- `feedback:MODEL` (direct RLAIF, no PM): the reward is the feedback model's probability, under a
  comparison principle drawn per call, that the response is better than the starting policy's own
  greedy answer to the same prompt (both option orders averaged), computed with `score_choices`.
  With `--feedback-mode absolute` it is instead p("(A) yes") for "is this response harmless and
  helpful?". Both are in [0, 1]; 0.5 means "as good as the reference". With `--feedback-mode group`
  the completions of each prompt are compared with each other (`--opponents` each, both orders) and
  the rewards are their Bradley-Terry log-strengths within the group (`caikit.rewards.group_scores`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from caikit import inputs, models, tables, training
from caikit.backends import SamplingParams
from caikit.errors import CaikitError, FieldError
from caikit.records import canonical
from caikit.rewards import Scorer, Settings, TrlReward
from caikit.training import TrainOptions

log = logging.getLogger(__name__)

ALGOS = ("rloo", "grpo", "dpo")


@dataclass
class RlOptions(TrainOptions):
    LR: ClassVar[tuple[float, float]] = (1e-6, 1e-6)

    algo: str = "rloo"
    kl_coef: float = 0.05
    num_generations: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    batch_size: int = 8  # completions per device batch (a multiple of num_generations); pairs for DPO
    label_smoothing: str = "0"
    min_margin: float = 0.0
    vllm: dict | None = None  # TRL's vLLM rollout settings (use_vllm, vllm_mode, ...), from vllm_settings


def vllm_settings(use: bool, mode: str = "colocate", server_url: str | None = None, memory: float | None = None) -> dict | None:
    """TRL's settings for generating rollouts with vLLM on a GPU; None when not asked for."""
    import importlib.util

    if not use:  # (--vllm-memory may be for the feedback model's --backend vllm)
        if server_url:
            raise CaikitError("--vllm-server-url needs --use-vllm")
        return None
    if importlib.util.find_spec("vllm") is None:
        raise CaikitError("--use-vllm: vLLM is not installed (pip install 'caikit[vllm]' on a GPU machine)")
    settings = {"use_vllm": True, "vllm_mode": mode}
    if server_url:
        settings["vllm_server_base_url"] = server_url
    if memory:
        settings["vllm_gpu_memory_utilization"] = memory
    return settings


def check(options: RlOptions) -> None:
    """Usage errors of the RL settings, before anything is loaded."""
    if options.vllm and options.algo == "dpo":
        raise CaikitError("--use-vllm: dpo generates nothing; it is for rloo and grpo")
    if options.vllm and models.pick_device(options.device) != "cuda":
        raise CaikitError("--use-vllm needs a CUDA GPU (TRL runs vLLM rollouts on GPUs)")
    if options.algo != "dpo" and options.temperature <= 0:
        raise CaikitError(f"--temperature {options.temperature}: rollouts are sampled; give a temperature above 0")
    if options.kl_coef < 0:
        raise CaikitError(f"--kl-coef {options.kl_coef}: must be >= 0")
    if options.algo != "dpo" and options.batch_size % options.num_generations:
        raise CaikitError(
            f"--batch-size {options.batch_size}: must be a multiple of --num-generations {options.num_generations} "
            "(it counts completions: prompts per step x generations)"
        )


def read_prompt_sources(sources: list[tuple[str, float]], seed: int, where: Path):
    """RL prompts from each FILE:WEIGHT (any format `redteam` reads), mixed and shuffled (seeded), as a
    Dataset of Arrow files in `where`, and their sources."""
    return tables.mix(sources, inputs.iter_prompts, "prompts", seed, where)


def reference_answers(backend, prompts: list[list[dict]], max_new_tokens: int) -> dict[str, str]:
    """The starting policy's greedy answers, the baseline that direct-RLAIF rewards compare against."""
    distinct = {canonical(p): p for p in prompts}
    texts = backend.generate(list(distinct.values()), SamplingParams(max_new_tokens=max_new_tokens, temperature=0))
    return dict(zip(distinct, texts))


def build_reward(spec: str, policy: str, sources: list[tuple[str, float]], options: RlOptions, *, constitution: str,
                 mode: str, principles: int = 1, opponents: int = 4, engine) -> tuple[TrlReward, dict]:
    """The reward of `--reward SPEC` (PM_DIR or feedback:MODEL) and its description for the report;
    `engine.build(model, scoring=...)` gives backends (the feedback model and, for vs-reference, the
    start policy whose greedy answers are the references)."""
    if not spec.startswith("feedback:"):
        scorer = Scorer(Settings(pm=spec, device=options.device, dtype=options.dtype))
        try:
            scorer.pm()
        except FieldError as err:
            raise err.named({"pm": "--reward"}) from None
        return TrlReward(scorer), scorer.describe()
    model = spec.removeprefix("feedback:")
    feedback = engine.build(model, scoring=True)
    settings = Settings(feedback_model=model, constitution=constitution, mode=mode, principles=principles, opponents=opponents,
                        seed=options.seed)
    scorer = Scorer(settings, backend=feedback)
    references = None
    if mode == "vs-reference":
        with tables.scratch() as where:
            prompts = list(read_prompt_sources(sources, options.seed, where)[0]["prompt"])
        start = feedback if model == policy else engine.build(policy)
        references = reference_answers(start, prompts, options.max_new_tokens)
    return TrlReward(scorer, references), scorer.describe()


def history(trainer) -> list[dict]:
    steps = []
    for entry in trainer.state.log_history:
        if "reward" in entry or ("loss" in entry and "step" in entry):
            steps.append(
                {
                    "step": entry.get("step"),
                    "reward": entry.get("reward"),
                    "kl": entry.get("kl"),
                    "mean_length": entry.get("completions/mean_length"),
                    "loss": entry.get("loss"),
                }
            )
    return steps


def run(
    policy: str,
    out: Path,
    options: RlOptions,
    *,
    reward=None,
    reward_description: dict | None = None,
    prompts: list[tuple[str, float]] = (),
    overwrite=False,
    resume=False,
    quiet=False,
) -> dict:
    """Train the policy with `reward` on `prompts` (RLOO/GRPO), or on the preference pairs in `prompts`
    (DPO); save it to `out` atomically. `prompts` are (FILE, WEIGHT) sources."""
    training.check_output(out, overwrite)
    check(options)
    base = training.load_base(policy, options, "--policy")
    with tables.scratch(out) as where:
        if options.algo == "dpo":
            dataset, described, derived = dpo_data(list(prompts), options, base.tokenizer, where)
        else:
            (dataset, described), derived = read_prompt_sources(list(prompts), options.seed, where), {}
        work = training.prepare_output(out, overwrite=overwrite, resume=resume)
        trainer, model = build_trainer(base, work, dataset, options, derived, reward, quiet)
        result, checkpoint, seconds = training.train_and_save(trainer, base.tokenizer, work, resume=resume, lora=options.lora)
    steps = history(trainer)
    report = {
        "stage": "rlaif",
        "algo": options.algo,
        "policy": policy,
        "policy_path": str(base.path),
        "reward": reward_description,
        "data": described,
        "hyperparameters": options.recorded(device=base.device, gradient_checkpointing=trainer.args.gradient_checkpointing,
                                            dtype=str(model.dtype).removeprefix("torch."), **derived),
        "metrics": {"steps": trainer.state.global_step, "train_loss": result.training_loss, **ends(steps)},
        "history": steps,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "seconds": round(seconds, 1),
    }
    return training.finish(work, out, report)


def build_trainer(base, work: Path, dataset, options: RlOptions, derived: dict, reward, quiet: bool):
    """The DPO trainer (noting in `derived` how many pairs it kept) or the online one; returns (trainer, model)."""
    from transformers import AutoModelForCausalLM

    model = base.load(AutoModelForCausalLM)
    peft_config = training.lora_config(options.lora, "CAUSAL_LM") if options.lora else None
    settings = dict(model=model, train_dataset=dataset, processing_class=base.tokenizer, peft_config=peft_config)
    if options.algo == "dpo":
        trainer = dpo_trainer(settings, training.trainer_args(work, options, base), options, derived["label_smoothing"], quiet)
        derived["pairs_trained"] = len(trainer.train_dataset)
    else:
        trainer = online_trainer(settings, training.trainer_args(work, options, base), options, reward, quiet)
    training.quiet_trainer(trainer)
    return trainer, model


def dpo_data(sources: list[tuple[str, float]], options: RlOptions, tokenizer, where: Path):
    """DPO's pairs (long prompts shortened) as a Dataset of Arrow files in `where`, their sources, and
    the settings derived from them."""
    pairs, described = _dpo_rows(sources, options, where)

    def shorten(row):
        prompt = shorter(row["prompt"], tokenizer, options.max_length)
        return {"prompt": prompt, "shortened": len(prompt) < len(row["prompt"])}

    pairs = pairs.map(shorten)
    if shortened := sum(pairs["shortened"]):
        log.info("%d of %d prompts lost their earliest turns to fit --max-length %d", shortened, len(pairs), options.max_length)
    pairs = pairs.remove_columns(["shortened"])
    return pairs, described, {"label_smoothing": _label_smoothing(options.label_smoothing, pairs["label"]), "prompts_shortened": shortened}


def dpo_trainer(settings: dict, common: dict, options: RlOptions, smoothing: float, quiet: bool):
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(beta=options.kl_coef, label_smoothing=smoothing, max_length=options.max_length, **common)
    trainer = DPOTrainer(args=config, callbacks=[training.progress_callback(quiet)], **settings)
    given, kept = len(settings["train_dataset"]), len(trainer.train_dataset)
    if kept < given:
        log.warning("%d of %d pairs have a prompt of --max-length %d tokens or more: TRL's DPO drops them", given - kept, given, options.max_length)
    if not kept:
        raise CaikitError(f"--max-length {options.max_length}: every pair's prompt is that long; nothing is left to train on")
    return trainer


def online_trainer(settings: dict, common: dict, options: RlOptions, reward, quiet: bool):
    if options.algo == "rloo":
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer
    config = Config(beta=options.kl_coef, num_generations=options.num_generations, max_completion_length=options.max_new_tokens,
                    temperature=options.temperature, **(options.vllm or {}), **common)
    return Trainer(reward_funcs=[reward], args=config, callbacks=[training.progress_callback(quiet, metric="reward")], **settings)


def ends(steps: list[dict]) -> dict:
    """Reward, KL and mean length at the first and the last rewarded step."""
    rewarded = [s for s in steps if s["reward"] is not None]
    return {f"{name}_{end}": (rewarded[k][key] if rewarded else None)
            for name, key in (("reward", "reward"), ("kl", "kl"), ("length", "mean_length")) for end, k in (("start", 0), ("end", -1))}


def _dpo_rows(sources: list[tuple[str, float]], options: RlOptions, where: Path):
    """Preference pairs from each FILE[:WEIGHT] (label output or human pairs), those within
    `min_margin` of 0.5 dropped."""
    if not sources:
        raise CaikitError("--algo dpo needs -i/--input FILE (label output or preference pairs)")

    def read(path):
        kept = 0
        for example in inputs.iter_preferences(path):
            if abs(example["label"] - 0.5) >= options.min_margin:
                kept += 1
                yield example
        if not kept:
            raise CaikitError(f"--min-margin {options.min_margin}: no preference pair of {path} is left to train on")

    return tables.mix(sources, read, "pairs", options.seed, where)


def shorter(prompt: list[dict], tokenizer, max_length: int) -> list[dict]:
    """A long multi-turn prompt without its earliest exchanges (a system message and the last user
    turn stay), until it takes at most half of `max_length` tokens, so that its responses keep room
    within DPO's max_length; TRL would drop a pair whose prompt alone fills it."""
    def length(messages):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    head = prompt[:1] if prompt[0]["role"] == "system" else []
    body = prompt[len(head):]
    while len(body) > 2 and length(head + body) > max_length // 2:
        body = body[2:]  # one user turn and its answer
    return head + body


def shorten_prompts(rows: list[dict], tokenizer, max_length: int) -> int:
    """`shorter` on each row's prompt of a list, in place; returns how many changed."""
    changed = 0
    for row in rows:
        prompt = shorter(row["prompt"], tokenizer, max_length)
        if len(prompt) < len(row["prompt"]):
            row["prompt"], changed = prompt, changed + 1
    return changed


def _label_smoothing(value: str, labels) -> float:
    """cDPO's label noise: a number, or `auto` = mean(1 - soft label) over the data's `labels`."""
    if value == "auto":
        return sum(1 - label for label in labels) / len(labels)
    try:
        number = float(value)
    except ValueError:
        raise CaikitError(f"--label-smoothing {value}: a number in [0, 0.5) or auto") from None
    if not 0 <= number < 0.5:
        raise CaikitError(f"--label-smoothing {value}: must be in [0, 0.5)")
    return number
