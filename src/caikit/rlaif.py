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
  helpful?". Both are in [0, 1]; 0.5 means "as good as the reference".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from caikit import inputs, models, training
from caikit.backends import SamplingParams
from caikit.errors import CaikitError, FieldError
from caikit.records import canonical
from caikit.rewards import Scorer, Settings, TrlReward
from caikit.training import LoraOptions

log = logging.getLogger(__name__)

ALGOS = ("rloo", "grpo", "dpo")
LR = 1e-6  # the default learning rate, full and LoRA


@dataclass
class RlOptions:
    algo: str = "rloo"
    kl_coef: float = 0.05
    num_generations: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    lr: float | None = None  # default: LR
    max_steps: int = -1
    epochs: float = 1.0
    batch_size: int = 8  # completions per device batch (a multiple of num_generations); pairs for DPO
    grad_accum: int = 1
    lora: LoraOptions | None = None
    seed: int = 0
    save_steps: int = 50
    gradient_checkpointing: bool | None = None  # None: on for accelerators, off on CPU
    device: str = "auto"
    dtype: str = "auto"
    label_smoothing: str = "0"
    min_margin: float = 0.0
    max_length: int = 1024  # DPO: prompt + response tokens kept (TRL's keep_start)
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


def read_prompt_sources(sources: list[tuple[str, float]], seed: int) -> tuple[list[dict], list[dict]]:
    """RL prompts from each FILE:WEIGHT (any format `redteam` reads), mixed and shuffled (seeded)."""
    return training.mix(sources, lambda path: [{"prompt": r["prompt"]} for r in inputs.read_prompts(path)], seed)


def reference_answers(backend, prompts: list[list[dict]], max_new_tokens: int) -> dict[str, str]:
    """The starting policy's greedy answers, the baseline that direct-RLAIF rewards compare against."""
    distinct = {canonical(p): p for p in prompts}
    texts = backend.generate(list(distinct.values()), SamplingParams(max_new_tokens=max_new_tokens, temperature=0))
    return dict(zip(distinct, texts))


def build_reward(spec: str, policy: str, sources: list[tuple[str, float]], options: RlOptions, *, constitution: str,
                 mode: str, principles: int = 1, engine) -> tuple[TrlReward, dict]:
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
    settings = Settings(feedback_model=model, constitution=constitution, mode=mode, principles=principles, seed=options.seed)
    scorer = Scorer(settings, backend=feedback)
    references = None
    if mode == "vs-reference":
        rows, _ = read_prompt_sources(sources, options.seed)
        start = feedback if model == policy else engine.build(policy)
        references = reference_answers(start, [r["prompt"] for r in rows], options.max_new_tokens)
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
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    training.check_output(out, overwrite)
    check(options)
    device = models.pick_device(options.device)
    dtype = models.pick_dtype(options.dtype, device)
    path = models.resolve(policy)
    tokenizer = models.load_tokenizer(path)
    safe = models.require_safetensors(path, f"--policy {policy}")
    if options.algo == "dpo":
        rows, described = _dpo_rows(list(prompts), options)
        if shortened := shorten_prompts(rows, tokenizer, options.max_length):
            log.info("%d of %d prompts lost their earliest turns to fit --max-length %d", shortened, len(rows), options.max_length)
    else:
        rows, described = read_prompt_sources(list(prompts), options.seed)
    work = training.prepare_output(out, overwrite=overwrite, resume=resume)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=safe)
    common = dict(
        learning_rate=options.lr or LR,
        max_steps=options.max_steps,
        num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        **training.trainer_args(work, seed=options.seed, save_steps=options.save_steps, device=device, dtype=dtype,
                                checkpointing=options.gradient_checkpointing),
    )
    peft_config = training.lora_config(options.lora, "CAUSAL_LM") if options.lora else None
    dataset = Dataset.from_list(rows)
    if options.algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        smoothing = _label_smoothing(options.label_smoothing, rows)
        config = DPOConfig(beta=options.kl_coef, label_smoothing=smoothing, max_length=options.max_length, **common)
        trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                             callbacks=[training.progress_callback(quiet)])
        dropped = len(rows) - len(trainer.train_dataset)
        if dropped:
            log.warning("%d of %d pairs have a prompt of --max-length %d tokens or more: TRL's DPO drops them", dropped, len(rows), options.max_length)
        if not len(trainer.train_dataset):
            raise CaikitError(f"--max-length {options.max_length}: every pair's prompt is that long; nothing is left to train on")
    else:
        if options.algo == "rloo":
            from trl import RLOOConfig as Config, RLOOTrainer as Trainer
        else:
            from trl import GRPOConfig as Config, GRPOTrainer as Trainer
        config = Config(
            beta=options.kl_coef,
            num_generations=options.num_generations,
            max_completion_length=options.max_new_tokens,
            temperature=options.temperature,
            **(options.vllm or {}),
            **common,
        )
        trainer = Trainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[training.progress_callback(quiet, metric="reward")])
    training.quiet_trainer(trainer)
    result, checkpoint, seconds = training.train_and_save(trainer, tokenizer, work, resume=resume, lora=options.lora)
    steps = history(trainer)
    rewarded = [s for s in steps if s["reward"] is not None]
    report = {
        "stage": "rlaif",
        "algo": options.algo,
        "policy": policy,
        "policy_path": str(path),
        "reward": reward_description,
        "data": described,
        "hyperparameters": {
            "kl_coef": options.kl_coef, "num_generations": options.num_generations, "max_new_tokens": options.max_new_tokens,
            "temperature": options.temperature, "lr": options.lr or LR, "max_steps": options.max_steps, "epochs": options.epochs,
            "batch_size": options.batch_size, "grad_accum": options.grad_accum, "seed": options.seed,
            "lora": vars(options.lora) if options.lora else None, "device": device, "gradient_checkpointing": trainer.args.gradient_checkpointing, "vllm": options.vllm,
            **({"label_smoothing": _label_smoothing(options.label_smoothing, rows), "min_margin": options.min_margin,
                "max_length": options.max_length, "prompts_shortened": shortened, "pairs_trained": len(trainer.train_dataset)} if options.algo == "dpo" else {}),
        },
        "metrics": {
            "steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "reward_start": rewarded[0]["reward"] if rewarded else None,
            "reward_end": rewarded[-1]["reward"] if rewarded else None,
            "kl_start": rewarded[0]["kl"] if rewarded else None,
            "kl_end": rewarded[-1]["kl"] if rewarded else None,
            "length_start": rewarded[0]["mean_length"] if rewarded else None,
            "length_end": rewarded[-1]["mean_length"] if rewarded else None,
        },
        "history": steps,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "seconds": round(seconds, 1),
    }
    return training.finish(work, out, report)


def _dpo_rows(sources: list[tuple[str, float]], options: RlOptions) -> tuple[list[dict], list[dict]]:
    """Preference pairs from each FILE[:WEIGHT] (label output or human pairs), those within
    `min_margin` of 0.5 dropped."""
    if not sources:
        raise CaikitError("--algo dpo needs -i/--input FILE (label output or preference pairs)")

    def read(path):
        kept = [{k: e[k] for k in ("prompt", "chosen", "rejected", "label")}
                for e in inputs.read_preferences(path) if abs(e["label"] - 0.5) >= options.min_margin]
        if not kept:
            raise CaikitError(f"--min-margin {options.min_margin}: no preference pair of {path} is left to train on")
        return kept

    return training.mix(sources, read, options.seed)


def shorten_prompts(rows: list[dict], tokenizer, max_length: int) -> int:
    """Drop the earliest exchanges of long multi-turn prompts (a system message and the last user turn
    stay) until each takes at most half of `max_length` tokens, so that its responses keep room within
    DPO's max_length; TRL would drop a pair whose prompt alone fills it. Returns how many changed."""
    def length(prompt):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    changed = 0
    for row in rows:
        head = row["prompt"][:1] if row["prompt"][0]["role"] == "system" else []
        body = row["prompt"][len(head):]
        while len(body) > 2 and length(head + body) > max_length // 2:
            body = body[2:]  # one user turn and its answer
        if len(head + body) < len(row["prompt"]):
            row["prompt"], changed = head + body, changed + 1
    return changed


def _label_smoothing(value: str, rows: list[dict]) -> float:
    """cDPO's label noise: a number, or `auto` = mean(1 - soft label) over the data."""
    if value == "auto":
        return sum(1 - r["label"] for r in rows) / len(rows)
    try:
        number = float(value)
    except ValueError:
        raise CaikitError(f"--label-smoothing {value}: a number in [0, 0.5) or auto") from None
    if not 0 <= number < 0.5:
        raise CaikitError(f"--label-smoothing {value}: must be in [0, 0.5)")
    return number
