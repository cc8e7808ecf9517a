"""What the training stages (sft, train-pm, rlaif) share: atomic output dirs, data hashes, options,
progress with the loss on stderr, and the `caikit_train.json` report (their data: `caikit.tables`).

Output protocol: a run works in `DIR.tmp/` (HF Trainer checkpoints go there, so `--resume` can pick
up the last one), writes the finished model to `DIR.tmp/final/`, then renames it to `DIR` and
removes `DIR.tmp/`. A crash never leaves a half model at `DIR`.

Several processes (`accelerate launch`, DDP/FSDP/DeepSpeed): every process trains; the main process
alone prepares the work dir, writes the model, the report and the rename, and the others wait for it
at those points, so they never race over `DIR`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from caikit import __version__
from caikit.console import stderr
from caikit.errors import CaikitError

log = logging.getLogger(__name__)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output dir unless asked (checked before any data is read)."""
    if out.exists() and not overwrite:
        raise CaikitError(f"-o {out}: already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise CaikitError(f"-o {out}: directory {out.parent} does not exist")


def world_size() -> int:
    """Processes in this run (accelerate/torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def prepare_output(out: Path, *, overwrite: bool, resume: bool) -> Path:
    """Check `out` and return its work dir `out.tmp` (kept when resuming, else emptied)."""
    check_output(out, overwrite)
    work = out.with_name(out.name + ".tmp")
    if is_main():
        if work.exists() and not resume:
            shutil.rmtree(work)
        work.mkdir(exist_ok=True)
    wait_for_everyone()
    return work


def last_checkpoint(work: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(work)) if work.is_dir() else None


def finish(work: Path, out: Path, report: dict) -> dict:
    """Write `caikit_train.json` beside the finished model, then publish it at `out` (the main
    process; the others wait until it is there); returns the report."""
    report["processes"] = world_size()
    if is_main():
        write_report(work / "final" / "caikit_train.json", report)
        publish(work, out)
    wait_for_everyone()
    return report


def publish(work: Path, out: Path) -> None:
    """Move the finished model `work/final` to `out` (replacing an old one) and drop the work dir."""
    final = work / "final"
    if out.exists():
        shutil.rmtree(out)
    os.replace(final, out)
    shutil.rmtree(work, ignore_errors=True)


def trainer_args(work: Path, options: "TrainOptions", base: "Base") -> dict:
    """The TrainingArguments every caikit trainer shares: the options' schedule and batch, checkpoints
    in `work` (kept 2, for --resume), a log line per step, no tqdm and no experiment trackers
    (progress is ours, on stderr). Gradient checkpointing (TRL's default) only where memory is
    scarce, on accelerators unless asked: on a CPU it costs a third more compute and saves memory
    that is rarely short."""
    import torch

    checkpointing = options.gradient_checkpointing
    return dict(
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        learning_rate=options.learning_rate(),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        gradient_checkpointing=base.device != "cpu" if checkpointing is None else checkpointing,
        output_dir=str(work),
        seed=options.seed,
        data_seed=options.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=base.device == "cpu",
        bf16=base.dtype == torch.bfloat16,
    )


def lora_config(lora: "LoraOptions", task_type: str):
    """A peft LoraConfig from caikit's LoRA options (`targets`: all-linear or comma-separated names)."""
    from peft import LoraConfig

    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise CaikitError("--lora under FSDP or DeepSpeed ZeRO-3: the adapter cannot be merged from sharded weights; "
                          "use DDP or ZeRO-1/2 with --lora, or train without it")
    targets = lora.targets if lora.targets == "all-linear" else [t.strip() for t in lora.targets.split(",")]
    extra = {"modules_to_save": ["score"]} if task_type == "SEQ_CLS" else {}
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type=task_type, **extra)


def train_and_save(trainer, tokenizer, work: Path, *, resume: bool, lora: "LoraOptions | None"):
    """Train (from the last checkpoint in `work` when resuming) and save the model, LoRA merged, to
    `work/final` (the adapter too, in `final/adapter`, with `keep_adapter`); returns (train result,
    checkpoint resumed from or None, seconds)."""
    import time

    checkpoint = last_checkpoint(work) if resume else None
    trainer.add_callback(no_checkpoint_at_the_end())
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    final = work / "final"
    model = trainer.accelerator.unwrap_model(trainer.model)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if lora:
        if lora.keep_adapter:
            trainer.save_model(str(final / "adapter"))
        if trainer.accelerator.is_main_process:
            merged = model.merge_and_unload()
            merged.save_pretrained(final, safe_serialization=True)
    else:
        trainer.save_model(str(final))  # the main process writes; FSDP / ZeRO-3 shards are gathered first
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(final)
        for pickled in final.rglob("training_args.bin"):  # the Trainer's pickle of its arguments: not part of a model
            pickled.unlink()
    trainer.accelerator.wait_for_everyone()
    return result, checkpoint, seconds


def no_checkpoint_at_the_end():
    """A callback that skips the Trainer's checkpoint after the last step (weights and optimizer
    state, 1.6 GB for the embedded model): the final model is saved right after, and the work dir
    with its checkpoints is removed once it is."""
    from transformers import TrainerCallback

    class NoCheckpointAtTheEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

    return NoCheckpointAtTheEnd()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_weighted(spec: str, option: str) -> tuple[str, float]:
    """`FILE:WEIGHT` (or just `FILE`, weight 1) with a positive weight."""
    path, sep, weight = spec.rpartition(":")
    if not sep or not path:
        return spec, 1.0
    try:
        value = float(weight)
    except ValueError:
        raise CaikitError(f"{option} {spec}: weight '{weight}' is not a number (use FILE:WEIGHT, e.g. helpful.jsonl:0.5)") from None
    if not value > 0 or value != value or value == float("inf"):
        raise CaikitError(f"{option} {spec}: weight must be a positive number")
    return path, value


@dataclass
class LoraOptions:
    """LoRA settings shared by sft, train-pm and rlaif (`targets`: all-linear or comma-separated names)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str = "all-linear"
    keep_adapter: bool = False


@dataclass
class TrainOptions:
    """The options every training stage takes (the CLI's `training` and `lora` groups and a few
    more); `SftOptions`, `PmOptions` and `RlOptions` add their own."""

    LR: ClassVar[tuple[float, float]] = (1e-5, 1e-4)  # the stage's default learning rate: full, LoRA

    epochs: float = 1.0
    max_steps: int = -1
    lr: float | None = None  # None: the stage's default (LR)
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    seed: int = 0
    save_steps: int = 50
    gradient_checkpointing: bool | None = None  # None: on for accelerators, off on CPU
    lora: LoraOptions | None = None
    device: str = "auto"
    dtype: str = "auto"
    chat_template: Path | None = None

    def learning_rate(self) -> float:
        return self.lr or self.LR[1 if self.lora else 0]

    def recorded(self, **used) -> dict:
        """The report's hyperparameters: every option as given, then what the run used (`used`:
        device, dtype, the learning rate, what the stage derived)."""
        given = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        return {**given, "lr": self.learning_rate(), **used}


@dataclass
class Base:
    """A training stage's starting model, resolved and checked before any output dir is made."""

    spec: str
    path: Path
    tokenizer: object
    device: str
    dtype: object  # a torch dtype
    safe: bool  # weights in safetensors (else pickles, allowed by --allow-pickle)

    def load(self, auto_class, **settings):
        """The model, with `auto_class` (AutoModelForCausalLM, ...)."""
        return auto_class.from_pretrained(self.path, dtype=self.dtype, use_safetensors=self.safe, **settings)


def load_base(spec: str, options: TrainOptions, flag: str) -> Base:
    """The model-loading chain every training stage starts with: device, dtype, the local dir of model
    spec `spec` (given as `flag`), its tokenizer (and --chat-template), its weights checked."""
    from caikit import models

    device = models.pick_device(options.device)
    path = models.resolve(spec)
    safe = models.require_safetensors(path, f"{flag} {spec}")
    tokenizer = models.load_tokenizer(path, options.chat_template)
    return Base(f"{flag} {spec}", path, tokenizer, device, models.pick_dtype(options.dtype, device), safe)


def write_report(path: Path, report: dict) -> None:
    report = {"caikit_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **report}
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def summary_rows(report: dict) -> list[tuple[str, str]]:
    """The end-of-training table: data used, example counts, metrics, seconds."""
    rows = []
    for source in report.get("data", []):
        weight = f", weight {source['weight']:g}" if "weight" in source else ""
        rows.append(("data", f"{source['path']} ({source['used']} of {source['records']} records{weight})"))
    rows += [(f"{key} examples", str(value)) for key, value in report.get("examples", {}).items()]
    for key, value in report.get("metrics", {}).items():
        if value is not None and not isinstance(value, dict):
            rows.append((key, f"{value:.4g}" if isinstance(value, float) else str(value)))
    rows.append(("seconds", str(report.get("seconds"))))
    return rows


def quiet_trainer(trainer) -> None:
    """Trainers print their logs to stdout when tqdm is off; stdout is for data, so drop that printer."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def progress_callback(quiet: bool, metric: str = "loss"):
    """A TrainerCallback drawing a rich bar with the latest `metric` on stderr (log lines when not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.task = None
            self.last = {}

        def on_train_begin(self, args, state, control, **kwargs):
            console = stderr()
            if quiet or not console.is_terminal:
                return
            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[shown]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, shown="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            self.last.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
            shown = "  ".join(f"{k} {v:.4g}" for k, v in self.last.items() if k in (metric, "eval_loss", "kl", "reward"))
            if self.bar is not None:
                self.bar.update(self.task, shown=shown)
            elif not quiet and metric in logs:
                log.info("step %d/%d  %s", state.global_step, state.max_steps, shown)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.stop()

    return RichProgress()
