"""Options shared by the commands, defined once so that a flag means the same thing everywhere.

- Single options are `Annotated` aliases (`Input`, `Output`, `Seed`, ...).
- Groups of options that travel together are plain functions whose parameters are the options and
  whose result the command receives under the group's name: `engine` (how models are loaded and
  run), `sampling` (how responses are sampled), `training` (optimizer settings), `lora`.
  `@with_options(engine, sampling, batch_size=8)` adds them to a command (keyword arguments change
  a group's defaults for that command).

What `--batch-size` counts: prompts (or conversations) per forward pass in generating and scoring
commands; training examples per device batch in training commands (sft: conversations, train-pm:
pairs, rlaif: completions).
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from caikit import models
from caikit.backends import BACKENDS, SamplingParams
from caikit.errors import CaikitError
from caikit.training import LoraOptions


class OptionError(typer.BadParameter):
    """A bad option value, shown as one line: `--flag VALUE: reason`."""

    def format_message(self) -> str:
        return self.message


def listing(values) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def choice(flag: str, values, help: str, noun: str | None = None):
    """An option that takes one of `values`, checked when the command line is parsed."""

    def parse(value: str) -> str:
        if value not in values:
            raise OptionError(f"{flag} {value}: {'unknown ' + noun + '; ' if noun else ''}choose {listing(values)}")
        return value

    parse.__name__ = "choice"
    return typer.Option(flag, parser=parse, metavar="[" + "|".join(values) + "]", help=help)


# -- single options ------------------------------------------------------------------------------
Input = Annotated[str, typer.Option("-i", "--input", help="Input file; - reads stdin.")]
Output = Annotated[str, typer.Option("-o", "--output", help="Output JSONL file; - writes stdout.")]
OutputDir = Annotated[Path, typer.Option("-o", "--output", help="Output dir (written atomically).")]
SERVER = "Models on a server (openai backend)"
SPEC_HELP = "Model spec: built-in name, HF model dir, .gguf file, hub id, or BACKEND:MODEL[@URL] (openai:NAME@http://host:8000/v1)."
Model = Annotated[str, typer.Option("--model", help=SPEC_HELP)]
Constitution = Annotated[
    str, typer.Option("--constitution", help="Built-in name (default, helpful-only), TOML/JSON file or directory.")
]
def parse_shard(value: str):
    from caikit.records import Shard

    index, sep, count = value.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        raise OptionError(f"--shard {value}: expected I/N, e.g. 2/8") from None
    if not sep or not 1 <= shard.index <= shard.count:
        raise OptionError(f"--shard {value}: expected I/N with 1 <= I <= N, e.g. 2/8")
    return shard


ShardOption = Annotated[
    Optional[str],
    typer.Option("--shard", metavar="I/N", parser=parse_shard, help="Work on shard I of N only (a partition by record id); join the shards with caikit merge."),
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed repeats a run.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N input records.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run from what it wrote: records (by id), judgments, or a training run's last checkpoint in DIR.tmp/.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output dir.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar, logs or summary on stderr.")]
Json = Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout (a table on stderr either way).")]
BaseModel = Annotated[str, typer.Option("--base-model", help="Model to start training from (a model spec).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16 (auto: bf16 on GPU, fp32 on CPU; bf16 on a CPU with native bf16 generates ~2x faster, rounded: see docs/measurements.md).")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Prompts (or conversations) per forward pass.")]
ChatTemplate = Annotated[Optional[Path], typer.Option("--chat-template", help="Jinja chat template for a model that lacks one.")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Most tokens generated per response.")]
AllowPickle = Annotated[bool, typer.Option(
    "--allow-pickle", callback=models.allow_pickle,  # (set for the whole process when the command line is parsed)
    help="Also load pickle-only checkpoints (.bin, .pt); unpickling can run code: only for files you trust.")]
PmDir = Annotated[Optional[Path], typer.Option("--pm", help="Preference-model dir (from caikit train-pm).")]
FEEDBACK_MODEL = "The feedback model: the model that judges pairs of responses (a model spec)."
FeedbackModel = Annotated[str, typer.Option("--feedback-model", help=FEEDBACK_MODEL)]
FEEDBACK_MODES = ("absolute", "vs-reference", "group")
FeedbackMode = Annotated[str, choice(
    "--feedback-mode", FEEDBACK_MODES, "A feedback-model reward: absolute, p(harmless and helpful); vs-reference, "
    "p(better than a reference answer), both orders; or group (rloo/grpo), Bradley-Terry strengths from comparing "
    "the completions of one prompt with each other.", "mode")]
PrinciplesPerLabel = Annotated[int, typer.Option("--principles-per-label", min=1, help="K comparison principles drawn per judgment, averaged (K > 1: an ensemble).")]
Kind = Annotated[str, choice("--kind", ("harmlessness", "helpfulness", "all"), "Comparison principles to draw: harmlessness, helpfulness or all.", "kind")]
Clamp = Annotated[str, typer.Option("--clamp", help="LO,HI: clamp chain-of-thought probabilities (the paper's best: 0.4,0.6).")]
CheckHuman = Annotated[Optional[str], typer.Option("--check-human", help="Human-labelled pairs: first measure the feedback model's agreement with them.")]
CheckLimit = Annotated[int, typer.Option("--check-limit", min=1, help="Human pairs used by --check-human.")]
MinMargin = Annotated[float, typer.Option("--min-margin", min=0.0, max=0.5, help="Drop pairs whose label p is within M of 0.5: |p - 0.5| < M.")]
ChunkSize = Annotated[int, typer.Option("--chunk-size", min=1, help="Records worked on and written together (revise: records, label: pairs).")]
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 is greedy.")]
Shots = Annotated[int, typer.Option("--shots", min=0, help="Few-shot examples per prompt (redteam --synthesize: red-team prompts; revise: the constitution's dialogues).")]
Policy = Annotated[Optional[str], typer.Option("--policy", help="The policy: the model whose responses are sampled (label: for pairs to judge; rlaif: the model trained).")]
MaxBatch = Annotated[int, typer.Option("--max-batch", min=1, help="Most items (sequences or responses) gathered from concurrent requests into one batch.")]
Port = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")]
MaxItems = Annotated[int, typer.Option("--max-items", min=1, help="Most items (prompts or responses) one request may hold; a larger one gets 413.")]
Where = Annotated[Optional[list[str]], typer.Option("--where", help="Filter: PATH=V, PATH!=V, PATH>N, PATH<N, PATH~TEXT (repeatable, ANDed).")]
Host = Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 opens it to the network).")]
WindowMs = Annotated[float, typer.Option("--window-ms", min=0.0, help="Gather concurrent requests this long into one batch.")]
ServerKey = Annotated[Optional[str], typer.Option("--api-key-env", help="Require `Authorization: Bearer $VAR` from clients.")]
VllmMemory = Annotated[Optional[float], typer.Option(
    "--vllm-memory", min=0.05, max=0.95, help="vLLM's share of GPU memory, for each vLLM engine the command starts (--backend vllm: 0.85; rlaif --use-vllm colocate: TRL's default).")]
MaxLength = Annotated[int, typer.Option("--max-length", min=16, help="Most tokens of a training example; which end is cut: see the command's help.")]
EvalSplit = Annotated[float, typer.Option("--eval-split", min=0.0, max=0.9, help="Fraction of the data held out for evaluation metrics.")]
Backend = Annotated[
    str, choice("--backend", tuple(BACKENDS), "Backend of model specs without a prefix: transformers (CPU/GPU), vllm (GPU) or openai (a server).", "backend")
]


# -- groups of options ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    """How models are loaded and run; `build(spec)` gives a backend."""

    backend: str = "transformers"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 16
    chat_template: Path | None = None
    endpoint: dict = field(default_factory=dict)  # defaults for models on OpenAI-compatible servers
    vllm_memory: float | None = None

    def build(self, model: str, *, scoring: bool = False):
        """The backend for model spec `model`; with `scoring`, checked now that it can score choices."""
        from caikit import backends

        options = dict(dtype=self.dtype, device=self.device, batch_size=self.batch_size,
                       chat_template=self.chat_template, endpoint=self.endpoint, vllm_memory=self.vllm_memory)
        backend = backends.build(self.backend, model, **options)
        return backends.for_scoring(backend) if scoring else backend


def engine(
    backend: Backend = "transformers",
    dtype: Dtype = "auto",
    device: Device = "auto",
    batch_size: BatchSize = 16,
    chat_template: ChatTemplate = None,
    allow_pickle: AllowPickle = False,
    vllm_memory: VllmMemory = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Server of openai:MODEL specs without @URL (default $OPENAI_BASE_URL).", rich_help_panel=SERVER)] = None,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Environment variable that holds the server's API key.", rich_help_panel=SERVER)] = "OPENAI_API_KEY",
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Local tokenizer (model dir or spec) of a served model, for exact choice scores; default: the server's /tokenize.", rich_help_panel=SERVER)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight per served model.", rich_help_panel=SERVER)] = 8,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds to wait for one reply.", rich_help_panel=SERVER)] = 300.0,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries of a failed request (429, 5xx, dropped) before the stage stops.", rich_help_panel=SERVER)] = 5,
) -> Engine:
    endpoint = dict(base_url=base_url, api_key_env=api_key_env, tokenizer=tokenizer, concurrency=concurrency,
                    timeout=timeout, retries=retries)
    return Engine(backend, dtype, device, batch_size, chat_template, endpoint, vllm_memory)


def destination(output: str) -> str:
    """How an `-o` value reads in a summary line."""
    return "stdout" if output == "-" else output


def clamp_range(clamp: str) -> tuple[float, float]:
    """`--clamp LO,HI` (chain-of-thought probabilities) as numbers."""
    try:
        lo, hi = (float(x) for x in clamp.split(","))
    except ValueError:
        raise CaikitError(f"--clamp {clamp}: expected LO,HI such as 0.4,0.6") from None
    if not (0 <= lo <= hi <= 1):
        raise CaikitError(f"--clamp {clamp}: need 0 <= LO <= HI <= 1")
    return lo, hi


def sampling(
    max_new_tokens: MaxNewTokens = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 is greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")] = 0.95,
    seed: Seed = 0,
) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)


def training(
    epochs: Annotated[float, typer.Option("--epochs", min=0.0, help="Passes over the data.")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", "--steps", help="Stop after N optimizer steps (overrides --epochs).")] = -1,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate (default: the stage's, smaller for full fine-tuning).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Training examples per device batch.")] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Gradient accumulation steps.")] = 1,
    save_steps: Annotated[int, typer.Option("--save-steps", min=1, help="Checkpoint every N steps (for --resume).")] = 50,
    gradient_checkpointing: Annotated[
        Optional[bool],
        typer.Option("--gradient-checkpointing/--no-gradient-checkpointing",
                     help="Recompute activations in the backward pass: less memory, ~1/3 more compute (default: on for GPUs, off on CPU)."),
    ] = None,
    seed: Seed = 0,
    dtype: Dtype = "auto",
    device: Device = "auto",
    allow_pickle: AllowPickle = False,
) -> dict:
    return dict(epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                save_steps=save_steps, gradient_checkpointing=gradient_checkpointing, seed=seed, dtype=dtype, device=device)


def lora(
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter (peft), merged into the weights at the end.")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", min=1, help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", min=0.0, max=1.0, help="LoRA dropout.")] = 0.05,
    lora_targets: Annotated[str, typer.Option("--lora-targets", help="all-linear, or comma-separated module names (q_proj,v_proj).")] = "all-linear",
    keep_adapter: Annotated[bool, typer.Option("--keep-adapter", help="Also keep the LoRA adapter in DIR/adapter.")] = False,
) -> LoraOptions | None:
    if keep_adapter and not lora:
        raise CaikitError("--keep-adapter needs --lora")
    return LoraOptions(lora_r, lora_alpha, lora_dropout, lora_targets, keep_adapter) if lora else None


def with_options(*groups, **defaults):
    """Add the options of each group to a command; the command gets the group's result as an argument
    named after the group. `defaults` override a group option's default for this command."""

    def wrap(func):
        hints = typing.get_type_hints(func, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(func).parameters.values()
               if p.name not in {g.__name__ for g in groups}]
        added, names = [], {}
        for group in groups:
            group_hints = typing.get_type_hints(group, include_extras=True)
            names[group] = list(inspect.signature(group).parameters)
            for p in inspect.signature(group).parameters.values():
                if p.name not in {q.name for q in own + added}:
                    added.append(p.replace(annotation=group_hints[p.name], default=defaults.get(p.name, p.default)))

        @functools.wraps(func)
        def command(**kwargs):
            results = {group.__name__: group(**{n: kwargs[n] for n in names[group]}) for group in groups}
            for n in {n for group in groups for n in names[group]} - {p.name for p in own}:
                kwargs.pop(n)
            return func(**kwargs, **results)

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own + added]
        command.__signature__ = inspect.Signature(parameters)
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return wrap


def named(values: list[str] | None, option: str) -> dict[str, str]:
    """`NAME=VALUE` options (repeatable) as a dict; a name may appear once."""
    found = {}
    for value in values or []:
        name, sep, spec = value.partition("=")
        if not sep or not name or not spec:
            raise CaikitError(f"{option} {value}: expected NAME=VALUE")
        if name in found:
            raise CaikitError(f"{option} {value}: the name {name} is used twice")
        found[name] = spec
    return found


def first(records: list, limit: int | None) -> list:
    """The first `limit` records (all of them when there is no limit)."""
    return records[:limit] if limit else records

