"""`caikit sft`: supervised fine-tuning on revisions (SL-CAI) with TRL's SFTTrainer.

- Data: conversational prompt-completion records (`revise` output, or any such JSONL); the loss is
  on the assistant completion only (TRL's completion mask), with the model's own chat template.
- `--mix FILE:WEIGHT` adds other prompt-completion data, e.g. the initial model's answers to
  helpful prompts, so the model does not become evasive: WEIGHT x (number of main records) examples
  are drawn from FILE (seeded; repeated if FILE is smaller).
- Full fine-tuning, or LoRA (`--lora`, peft) merged into the weights at the end.
- Deviation from the paper: the paper fine-tunes the *pretrained* model on the revisions; caikit's
  default base is the embedded chat model, because a pretrained checkpoint of it is not shipped.
  Pass `--base-model` to fine-tune a pretrained model instead (give it a chat template).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from caikit import inputs, models, tables, training
from caikit.errors import CaikitError
from caikit.training import Base, TrainOptions


@dataclass
class SftOptions(TrainOptions):
    LR: ClassVar[tuple[float, float]] = (2e-5, 2e-4)

    base_model: str = models.DEFAULT_MODEL
    eval_split: float = 0.0


def examples_of(path: str):
    """Prompt-completion examples (TRL conversational format) from a JSONL file, one at a time."""
    for r in inputs.iter_completions(path):
        yield {"prompt": r["prompt"], "completion": [{"role": m["role"], "content": m["content"]} for m in r["completion"]]}


def mixed_dataset(main: str, mixes: list[tuple[str, float]], seed: int, where: Path):
    """The training examples (all of `main`, plus WEIGHT x len(main) from each mix) as a Dataset of
    Arrow files in `where`, and their sources."""
    return tables.mix([(main, 1.0), *mixes], examples_of, "completions", seed, where, relative_to_first=True)


def build_trainer(dataset, work: Path, options: SftOptions, quiet: bool = True, base: Base | None = None):
    """An SFTTrainer for `dataset` writing checkpoints to `work`; returns (trainer, tokenizer, base path, lr)."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    base = base or training.load_base(options.base_model, options, "--base-model")
    model = base.load(AutoModelForCausalLM)
    tokenizer = base.tokenizer

    eval_dataset = None
    if options.eval_split > 0:
        split = dataset.train_test_split(test_size=options.eval_split, seed=options.seed)
        dataset, eval_dataset = split["train"], split["test"]
    config = SFTConfig(
        max_length=options.max_length,
        completion_only_loss=True,
        eval_strategy="epoch" if eval_dataset is not None else "no",
        dataloader_num_workers=0,
        **training.trainer_args(work, options, base),
    )
    peft_config = training.lora_config(options.lora, "CAUSAL_LM") if options.lora else None
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[training.progress_callback(quiet)],
    )
    training.quiet_trainer(trainer)
    return trainer, tokenizer, base.path, options.learning_rate()


def run(main: str, mixes: list[tuple[str, float]], out: Path, options: SftOptions, *, overwrite=False, resume=False, quiet=False) -> dict:
    """Train, save the model to `out` atomically, and return the report written to caikit_train.json."""
    training.check_output(out, overwrite)
    with tables.scratch(out) as where:
        examples, sources = mixed_dataset(main, mixes, options.seed, where)
        base = training.load_base(options.base_model, options, "--base-model")  # (checked before DIR.tmp is made)
        if options.eval_split > 0 and len(examples) < 4:
            raise CaikitError(f"--eval-split {options.eval_split}: too few examples ({len(examples)}) to hold some out")
        work = training.prepare_output(out, overwrite=overwrite, resume=resume)
        trainer, tokenizer, path, _ = build_trainer(examples, work, options, quiet, base)
        dataset, eval_dataset = trainer.train_dataset, trainer.eval_dataset
        result, checkpoint, seconds = training.train_and_save(trainer, tokenizer, work, resume=resume, lora=options.lora)

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    report = {
        "stage": "sft",
        "base_model": options.base_model,
        "base_path": str(path),
        "data": sources,
        "examples": {"train": len(dataset), "eval": len(eval_dataset) if eval_dataset is not None else 0},
        "hyperparameters": options.recorded(completion_only_loss=True, device=str(trainer.args.device),
                                            gradient_checkpointing=trainer.args.gradient_checkpointing,
                                            dtype=str(trainer.model.dtype).removeprefix("torch.")),
        "metrics": {
            "steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "eval_loss": evals[-1] if evals else None,
        },
        "loss_history": losses,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "seconds": round(seconds, 1),
    }
    return training.finish(work, out, report)
