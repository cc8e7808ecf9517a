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

from caikit import inputs, models, tables, training
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


def mixed_preferences(sources: list[tuple[str, float]], seed: int, where: Path):
    """Examples from each FILE:WEIGHT (WEIGHT x its record count, seeded; repeated when > 1) as a
    Dataset of Arrow files in `where`, and their sources."""
    hard = lambda part: {"hard_labels": sum(1 for label in part["label"] if label in (0.0, 1.0))}  # noqa: E731
    examples, described = tables.mix(sources, inputs.iter_preferences, "preferences", seed, where, describe=hard)
    if len(examples) < 2:
        raise CaikitError(f"-i/--input: need at least 2 preference records, got {len(examples)}")
    return examples, described


def encode_pairs(batch: dict, tokenizer, max_length: int) -> dict:
    """A batch of pairs' `chosen_ids`/`rejected_ids` (TRL's pre-tokenized columns: each conversation's
    last `max_length` tokens) and whether each pair was cut (`Dataset.map(batched=True)`)."""
    chosen = encode(tokenizer, [p + c for p, c in zip(batch["prompt"], batch["chosen"])], max_length + 1)
    rejected = encode(tokenizer, [p + r for p, r in zip(batch["prompt"], batch["rejected"])], max_length + 1)
    return {
        "chosen_ids": [c[-max_length:] for c in chosen],
        "rejected_ids": [r[-max_length:] for r in rejected],
        "cut": [max(len(c), len(r)) > max_length for c, r in zip(chosen, rejected)],
    }


def run(sources: list[tuple[str, float]], out: Path, options: PmOptions, *, overwrite=False, resume=False, quiet=False) -> dict:
    """Train a preference model, save it to `out` atomically, and return the caikit_train.json report."""
    training.check_output(out, overwrite)
    with tables.scratch(out) as where:
        examples, described = mixed_preferences(sources, options.seed, where)
        base = training.load_base(options.base_model, options, "--base-model")
        work = training.prepare_output(out, overwrite=overwrite, resume=resume)
        encoded = examples.map(encode_pairs, batched=True, fn_kwargs={"tokenizer": base.tokenizer, "max_length": options.max_length},
                               remove_columns=["subset"])
        if cut := sum(encoded["cut"]):
            log.warning("%d of %d pairs are longer than --max-length %d tokens; each keeps its last tokens "
                        "(the responses' ends and as much of the prompt as fits)", cut, len(encoded), options.max_length)
        dataset, held_out = split(encoded.remove_columns(["cut"]), options)
        trainer, model = train(base, work, dataset, held_out, options, quiet)
        result, checkpoint, seconds = training.train_and_save(trainer, base.tokenizer, work, resume=resume, lora=options.lora)
        pm = PreferenceModel(work / "final", device=base.device, max_length=options.max_length)
        metrics = {
            "steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "held_out": evaluate_pairs(pm, held_out) if held_out is not None else None,
            "train": evaluate_pairs(pm, dataset.select(range(min(256, len(dataset))))),
        }
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    report = {
        "stage": "train-pm",
        "base_model": options.base_model,
        "base_path": str(base.path),
        "data": described,
        "examples": {"train": len(dataset), "eval": len(held_out) if held_out is not None else 0, "truncated": cut},
        "hyperparameters": options.recorded(loss="bce(sigmoid(r_chosen - r_rejected), soft label)", device=base.device,
                                            gradient_checkpointing=trainer.args.gradient_checkpointing,
                                            dtype=str(model.dtype).removeprefix("torch.")),
        "metrics": metrics,
        "loss_history": losses,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "seconds": round(seconds, 1),
    }
    return training.finish(work, out, report)


def split(dataset, options: PmOptions):
    """The training pairs and the held-out ones (`--eval-split` of them, when there are 10 pairs or more)."""
    if options.eval_split > 0 and len(dataset) >= 10:
        parts = dataset.train_test_split(test_size=options.eval_split, seed=options.seed)
        return parts["train"], parts["test"]
    return dataset, None


def train(base, work: Path, dataset, held_out, options: PmOptions, quiet: bool):
    """TRL's RewardTrainer on soft labels, with a one-logit head on the base model; returns (trainer, model)."""
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig

    set_seed(options.seed)  # the new head's weights are drawn here, before the Trainer seeds its own run
    model = base.load(AutoModelForSequenceClassification, num_labels=1)
    # The classification head reads the last non-pad token: without pad_token_id it reads a pad and
    # accuracy silently stalls near chance. Set it on the model and in the saved config.
    model.config.pad_token_id = base.tokenizer.pad_token_id
    config = RewardConfig(
        max_length=options.max_length,
        center_rewards_coefficient=options.center_rewards,
        eval_strategy="epoch" if held_out is not None else "no",
        remove_unused_columns=True,
        **training.trainer_args(work, options, base),
    )
    peft_config = training.lora_config(options.lora, "SEQ_CLS") if options.lora else None
    Trainer, Collator = soft_reward_trainer()
    trainer = Trainer(
        model=model,
        args=config,
        train_dataset=dataset,
        eval_dataset=held_out,
        processing_class=base.tokenizer,
        data_collator=Collator(pad_token_id=base.tokenizer.pad_token_id),
        peft_config=peft_config,
        callbacks=[training.progress_callback(quiet)],
    )
    training.quiet_trainer(trainer)
    return trainer, model


def summary_metrics(report: dict) -> dict:
    """The train-pm report's metrics flattened for the summary table (held-out figures when there are any)."""
    metrics = report["metrics"]
    part = metrics["held_out"] or metrics["train"]
    which = "held-out" if metrics["held_out"] else "train"
    return {
        "steps": metrics["steps"], "train_loss": metrics["train_loss"],
        f"{which} accuracy": part["accuracy"], f"{which} mean margin": part["mean_margin"], f"{which} ECE": part["ece"],
    }
