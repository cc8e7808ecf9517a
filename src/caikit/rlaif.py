"""`caikit rlaif`: reinforcement learning from AI feedback, with TRL's RLOO or GRPO (online, with a KL
penalty to the starting policy), or DPO on `label` output (offline).

The paper ran PPO against the preference model; TRL no longer ships PPO, and RLOO/GRPO optimize
the same KL-regularized objective with group baselines instead of a value model.

Rewards (`--reward`):
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

import random
from dataclasses import dataclass, field
from pathlib import Path

from caikit import inputs, models, training
from caikit.backends import SamplingParams
from caikit.errors import CaikitError
from caikit.records import canonical

ALGOS = ("rloo", "grpo", "dpo")


class PMReward:
    """Reward = the preference model's scalar for prompt + response, on text, with the PM's tokenizer."""

    __name__ = "pm"

    def __init__(self, pm):
        self.pm = pm

    def __call__(self, prompts, completions, **kwargs):
        return self.pm.rewards([p + c for p, c in zip(prompts, completions)])


class FeedbackReward:
    """Direct RLAIF: p(response better than the reference answer) from the feedback model's log-probs."""

    __name__ = "feedback"
    ABSOLUTE = (
        "Is the assistant's last response both harmless and helpful? (A) means yes, (B) means no.",
        "Is the assistant's last response harmful or unhelpful? (A) means yes, (B) means no.",
    )

    def __init__(self, backend, comparisons, references: dict[str, str], mode: str = "vs-reference", seed: int = 0):
        self.backend = backend
        self.comparisons = comparisons
        self.references = references
        self.mode = mode
        self.rng = random.Random(seed)

    def __call__(self, prompts, completions, **kwargs):
        from caikit.constitution import Comparison
        from caikit.label import CHOICES, conversation, normalized

        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        asks = []
        if self.mode == "absolute":  # asked with (A) = good and with (A) = bad, averaged
            good, bad = (Comparison("absolute", q) for q in self.ABSOLUTE)
            for prompt, text in zip(prompts, texts):
                asks.append(conversation(prompt, text, "(no second response)", good, []))
                asks.append(conversation(prompt, text, "(no second response)", bad, []))
            scores = self.backend.score_choices(asks, list(CHOICES))
            return [(normalized(scores[2 * k]) + 1 - normalized(scores[2 * k + 1])) / 2 for k in range(len(texts))]
        for prompt, text in zip(prompts, texts):
            principle = self.rng.choice(self.comparisons)
            reference = self.references[canonical(prompt)]
            asks.append(conversation(prompt, text, reference, principle, []))
            asks.append(conversation(prompt, reference, text, principle, []))
        scores = self.backend.score_choices(asks, list(CHOICES))
        return [(normalized(scores[2 * k]) + 1 - normalized(scores[2 * k + 1])) / 2 for k in range(len(texts))]


@dataclass
class RlOptions:
    algo: str = "rloo"
    kl_coef: float = 0.05
    num_generations: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    lr: float = 1e-6
    steps: int = -1
    epochs: float = 1.0
    batch_size: int = 2  # prompts per optimizer step (x num_generations completions)
    lora: object = None
    seed: int = 0
    save_steps: int = 50
    device: str = "auto"
    dtype: str = "auto"
    label_smoothing: str = "0"
    min_margin: float = 0.0
    extra: dict = field(default_factory=dict)


def read_prompt_sources(sources: list[tuple[str, float]], seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    rows, described = [], []
    for path, weight in sources:
        records = inputs.read_prompts(path)
        count = max(1, round(weight * len(records)))
        rows += [{"prompt": r["prompt"]} for r in training.take(records, count, rng)]
        described.append({"path": path, "sha256": training.sha256_file(path) if path != "-" else None, "records": len(records), "weight": weight, "used": count})
    rng.shuffle(rows)
    return rows, described


def reference_answers(backend, prompts: list[list[dict]], max_new_tokens: int) -> dict[str, str]:
    """The starting policy's greedy answers, the baseline that direct-RLAIF rewards compare against."""
    distinct = {canonical(p): p for p in prompts}
    texts = backend.generate(list(distinct.values()), SamplingParams(max_new_tokens=max_new_tokens, temperature=0))
    return dict(zip(distinct, texts))


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
    data: list[str] = (),
    overwrite=False,
    resume=False,
    quiet=False,
) -> dict:
    """Train the policy with `reward` (RLOO/GRPO) or on preference `data` (DPO); save to `out` atomically."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    if out.exists() and not overwrite:
        raise CaikitError(f"-o {out}: already exists; pass --overwrite to replace it")
    device = models.pick_device(options.device)
    dtype = models.pick_dtype(options.dtype, device)
    path = models.resolve(policy)
    tokenizer = models.load_tokenizer(path)
    if options.algo == "dpo":
        rows, described = _dpo_rows(data, options)
    else:
        rows, described = read_prompt_sources(list(prompts), options.seed)
    work = training.prepare_output(out, overwrite=overwrite, resume=resume)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    common = dict(
        learning_rate=options.lr,
        max_steps=options.steps,
        num_train_epochs=options.epochs,
        **training.trainer_args(work, seed=options.seed, save_steps=options.save_steps, device=device, dtype=dtype),
        **options.extra,
    )
    peft_config = training.lora_config(options.lora, "CAUSAL_LM") if options.lora else None
    dataset = Dataset.from_list(rows)
    if options.algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        smoothing = _label_smoothing(options.label_smoothing, rows)
        config = DPOConfig(beta=options.kl_coef, label_smoothing=smoothing, per_device_train_batch_size=options.batch_size, **common)
        trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                             callbacks=[training.progress_callback(quiet)])
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
            per_device_train_batch_size=options.batch_size * options.num_generations,
            **common,
        )
        trainer = Trainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[training.progress_callback(quiet, metric="reward")])
    training.quiet_trainer(trainer)
    result, checkpoint, seconds = training.train_and_save(trainer, tokenizer, work, resume=resume, lora=bool(options.lora))
    final = work / "final"
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
            "temperature": options.temperature, "lr": options.lr, "steps": options.steps, "epochs": options.epochs,
            "batch_size": options.batch_size, "seed": options.seed,
            "lora": vars(options.lora) if options.lora else None, "device": device,
            **({"label_smoothing": _label_smoothing(options.label_smoothing, rows), "min_margin": options.min_margin} if options.algo == "dpo" else {}),
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
    training.write_report(final / "caikit_train.json", report)
    training.publish(work, out)
    return report


def _dpo_rows(data: list[str], options: RlOptions) -> tuple[list[dict], list[dict]]:
    if not data:
        raise CaikitError("--algo dpo needs --data FILE (label output or preference pairs)")
    rows, described = [], []
    for path in data:
        examples = inputs.read_preferences(path)
        kept = [e for e in examples if abs(e["label"] - 0.5) >= options.min_margin]
        rows += [{k: e[k] for k in ("prompt", "chosen", "rejected", "label")} for e in kept]
        described.append({"path": path, "sha256": training.sha256_file(path), "records": len(examples), "weight": 1.0, "used": len(kept)})
    if not rows:
        raise CaikitError(f"--min-margin {options.min_margin}: no preference pair is left to train on")
    return rows, described


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
