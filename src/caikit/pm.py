"""Preference models: training on soft AI labels (`caikit train-pm`); the trained model as a scorer
is `caikit.preference_model.PreferenceModel`.

A preference model is a causal LM with a one-logit sequence-classification head; its reward for a
conversation is the logit at the last token. Training uses TRL's RewardTrainer with one change, as
in the paper: the loss is the binary cross-entropy between sigma(r_chosen - r_rejected) and the
soft label p = p(chosen better), i.e. -(p log sigma(d) + (1 - p) log sigma(-d)); a hard label
(p = 1) gives TRL's usual -log sigma(d).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from caikit import inputs, models, training
from caikit.errors import CaikitError
from caikit.preference_model import PreferenceModel, encode, evaluate_pairs
from caikit.training import TrainOptions

log = logging.getLogger(__name__)


def soft_preference_loss(delta, labels):
    """BCE between sigma(delta) and soft labels (torch tensors)."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(delta, labels)


def soft_reward_trainer():
    """TRL's RewardTrainer, taught to carry a soft `label` column and use it in the loss."""
    import torch
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class SoftLabelCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            batch = super().torch_call(examples)
            batch["label"] = torch.tensor([float(e["label"]) for e in examples])
            return batch

    class SoftRewardTrainer(RewardTrainer):
        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "label" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "label"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("label").float()
            mode = "train" if self.model.training else "eval"
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).float(), chunks=2)
            delta = chosen - rejected
            loss = soft_preference_loss(delta, labels.to(delta.device))
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
            with torch.no_grad():
                self._metrics[mode]["accuracy"].append(((delta > 0).float() == (labels > 0.5).float()).float().mean().item())
                self._metrics[mode]["margin"].append(delta.mean().item())
            return (loss, outputs) if return_outputs else loss

    return SoftRewardTrainer, SoftLabelCollator


@dataclass
class PmOptions(TrainOptions):
    LR: ClassVar[tuple[float, float]] = (1e-5, 1e-4)

    base_model: str = models.DEFAULT_MODEL
    eval_split: float = 0.1
    center_rewards: float | None = None


def mixed_preferences(sources: list[tuple[str, float]], seed: int) -> tuple[list[dict], list[dict]]:
    """Examples from each FILE:WEIGHT (WEIGHT x its record count, seeded; repeated when > 1)."""
    hard = lambda examples: {"hard_labels": sum(1 for e in examples if e["label"] in (0.0, 1.0))}  # noqa: E731
    rows, described = training.mix(sources, inputs.read_preferences, seed, describe=hard)
    if len(rows) < 2:
        raise CaikitError(f"-i/--input: need at least 2 preference records, got {len(rows)}")
    return rows, described


def encode_pairs(tokenizer, rows: list[dict], max_length: int) -> tuple[list[dict], int]:
    """Rows with `chosen_ids`/`rejected_ids` (TRL's pre-tokenized columns), and how many were cut."""
    chosen = encode(tokenizer, [r["prompt"] + r["chosen"] for r in rows], max_length + 1)
    rejected = encode(tokenizer, [r["prompt"] + r["rejected"] for r in rows], max_length + 1)
    cut = sum(1 for c, r in zip(chosen, rejected) if max(len(c), len(r)) > max_length)
    return [{**row, "chosen_ids": c[-max_length:], "rejected_ids": r[-max_length:]} for row, c, r in zip(rows, chosen, rejected)], cut


def run(sources: list[tuple[str, float]], out: Path, options: PmOptions, *, overwrite=False, resume=False, quiet=False) -> dict:
    """Train a preference model, save it to `out` atomically, and return the caikit_train.json report."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig

    training.check_output(out, overwrite)
    rows, described = mixed_preferences(sources, options.seed)
    base = training.load_base(options.base_model, options, "--base-model")
    tokenizer, device = base.tokenizer, base.device
    work = training.prepare_output(out, overwrite=overwrite, resume=resume)

    model = base.load(AutoModelForSequenceClassification, num_labels=1)
    # The classification head reads the last non-pad token: without pad_token_id it reads a pad and
    # accuracy silently stalls near chance. Set it on the model and in the saved config.
    model.config.pad_token_id = tokenizer.pad_token_id
    fields = ("prompt", "chosen", "rejected", "label")
    encoded, cut = encode_pairs(tokenizer, [{k: r[k] for k in fields} for r in rows], options.max_length)
    if cut:
        log.warning("%d of %d pairs are longer than --max-length %d tokens; "
                    "each keeps its last tokens (the responses' ends and as much of the prompt as fits)", cut, len(rows), options.max_length)
    dataset = Dataset.from_list(encoded)
    held_out = []
    if options.eval_split > 0 and len(rows) >= 10:
        split = dataset.train_test_split(test_size=options.eval_split, seed=options.seed)
        dataset, eval_dataset = split["train"], split["test"]
        held_out = [dict(e) for e in eval_dataset]
    else:
        eval_dataset = None
    config = RewardConfig(
        max_length=options.max_length,
        center_rewards_coefficient=options.center_rewards,
        eval_strategy="epoch" if eval_dataset is not None else "no",
        remove_unused_columns=True,
        **training.trainer_args(work, options, base),
    )
    peft_config = training.lora_config(options.lora, "SEQ_CLS") if options.lora else None
    Trainer, Collator = soft_reward_trainer()
    trainer = Trainer(
        model=model,
        args=config,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=Collator(pad_token_id=tokenizer.pad_token_id),
        peft_config=peft_config,
        callbacks=[training.progress_callback(quiet)],
    )
    training.quiet_trainer(trainer)
    result, checkpoint, seconds = training.train_and_save(trainer, tokenizer, work, resume=resume, lora=options.lora)
    pm = PreferenceModel(work / "final", device=device, max_length=options.max_length)
    train_rows = [dict(e) for e in dataset]
    metrics = {
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "held_out": evaluate_pairs(pm, held_out) if held_out else None,
        "train": evaluate_pairs(pm, train_rows[:256]),
    }
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    report = {
        "stage": "train-pm",
        "base_model": options.base_model,
        "base_path": str(base.path),
        "data": described,
        "examples": {"train": len(dataset), "eval": len(held_out), "truncated": cut},
        "hyperparameters": options.recorded(loss="bce(sigmoid(r_chosen - r_rejected), soft label)", device=device,
                                            gradient_checkpointing=trainer.args.gradient_checkpointing,
                                            dtype=str(model.dtype).removeprefix("torch.")),
        "metrics": metrics,
        "loss_history": losses,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "seconds": round(seconds, 1),
    }
    return training.finish(work, out, report)


def summary_metrics(report: dict) -> dict:
    """The train-pm report's metrics flattened for the summary table (held-out figures when there are any)."""
    metrics = report["metrics"]
    part = metrics["held_out"] or metrics["train"]
    which = "held-out" if metrics["held_out"] else "train"
    return {
        "steps": metrics["steps"], "train_loss": metrics["train_loss"],
        f"{which} accuracy": part["accuracy"], f"{which} mean margin": part["mean_margin"], f"{which} ECE": part["ece"],
    }
