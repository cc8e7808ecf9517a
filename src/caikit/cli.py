"""The `caikit` command line: each subcommand parses its options and calls one stage function.

Conventions shared by every command: `-i/--input` and `-o/--output` default to `-` (stdin/stdout);
data goes to stdout, progress and logs to stderr; bad input exits 2 with one line naming the file
and line or the option at fault; set CAIKIT_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from caikit import __version__
from caikit.errors import CaikitError

app = typer.Typer(
    name="caikit",
    help="Constitutional AI from the command line: red-team -> revise -> sft -> label -> train-pm -> rlaif -> eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- options shared by the stages (the same flag means the same thing everywhere) -------------------
Input = Annotated[str, typer.Option("-i", "--input", help="Input file; - reads stdin.")]
Output = Annotated[str, typer.Option("-o", "--output", help="Output JSONL file; - writes stdout.")]
Model = Annotated[str, typer.Option("--model", help="Built-in name, local HF model dir, .gguf file or hub id.")]
Backend = Annotated[str, typer.Option("--backend", help="Generation backend: transformers (CPU/GPU) or vllm (GPU).")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16 (auto: bf16 on GPU, fp32 on CPU).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Prompts per forward batch.")]
ChatTemplate = Annotated[
    Optional[Path], typer.Option("--chat-template", help="Jinja chat template for a model that lacks one.")
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed and batch size repeat a run.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N input records.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run: skip ids already written.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar, logs or summary on stderr.")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Most tokens generated per response.")]
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 is greedy.")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")]
# options shared by the training stages (sft, train-pm, rlaif)
SaveSteps = Annotated[int, typer.Option("--save-steps", min=1, help="Checkpoint every N steps (for --resume).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output dir.")]
ResumeTraining = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in DIR.tmp/.")]
LoraRank = Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank.")]
GradAccum = Annotated[int, typer.Option("--grad-accum", min=1, help="Gradient accumulation steps.")]
LoraAlpha = Annotated[int, typer.Option("--lora-alpha", min=1, help="LoRA alpha.")]


def command(name: str | None = None, group: typer.Typer | None = None, **settings):
    """Register a command whose CaikitErrors become one stderr line and exit code 2."""

    def register(func):
        title = f"caikit {group.info.name + ' ' if group else ''}{name or func.__name__}"

        @functools.wraps(func)
        def run(*args, **kwargs):
            from caikit.console import say

            try:
                return func(*args, **kwargs)
            except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
                raise
            except CaikitError as err:
                say(f"{title}: error: {err}")
                raise typer.Exit(err.exit_code) from None
            except BrokenPipeError:  # `caikit ... | head`: the reader left; not an error
                sys.stderr.close()
                raise typer.Exit(0) from None
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            except Exception as err:
                if os.environ.get("CAIKIT_DEBUG"):
                    raise
                message = f"{title}: failed: {type(err).__name__}: {err}".splitlines()[0]
                say(message + " (CAIKIT_DEBUG=1 shows the traceback)")
                raise typer.Exit(1) from None

        return (group or app).command(name, **settings)(run)

    return register


def _version(value: bool):
    if value:
        typer.echo(f"caikit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    """Constitutional AI (Bai et al. 2022) as composable stages that exchange JSONL."""


@command()
def redteam(
    input: Input = "-",
    output: Output = "-",
    format: Annotated[str, typer.Option("--format", help="auto, jsonl, csv, txt or hh (hh-rlhf transcripts).")] = "auto",
    prompt_field: Annotated[str, typer.Option("--prompt-field", help="CSV column holding the prompt.")] = "prompt",
    keep_history: Annotated[
        bool, typer.Option("--keep-history", help="hh-rlhf: keep the conversation up to the last human turn.")
    ] = False,
    synthesize: Annotated[
        int, typer.Option("--synthesize", min=0, help="Write N new red-team prompts few-shot instead of answering.")
    ] = 0,
    shots: Annotated[int, typer.Option("--shots", min=1, help="Examples per few-shot prompt for --synthesize.")] = 6,
    model: Model = "smollm2-135m-instruct",
    backend: Backend = "transformers",
    dtype: Dtype = "auto",
    device: Device = "auto",
    chat_template: ChatTemplate = None,
    batch_size: BatchSize = 16,
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.95,
    seed: Seed = 0,
    limit: Limit = None,
    resume: Resume = False,
    quiet: Quiet = False,
):
    """Answer red-team prompts with the initial (helpful-only) model.

    Reads prompts (JSONL `prompt`/`messages`, CSV, plain text or hh-rlhf transcripts) and writes one
    JSONL record per prompt in TRL's conversational prompt-completion format, with a stable `id` and
    a `caikit` provenance field.

    Example: caikit redteam -i examples/prompts/redteam.jsonl -o runs/redteam.jsonl

    With --synthesize N it writes N new prompts instead, few-shot from the input prompts, as
    `{id, prompt}` records that redteam itself accepts: caikit redteam -i seeds.jsonl --synthesize 100
    """
    from caikit import backends, console, inputs, redteam as stage
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet)
    params = backends.SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    records = inputs.read_prompts(input, format, prompt_field=prompt_field, keep_history=keep_history)
    records = records[:limit] if limit else records
    timer = console.Timer()
    with JsonlWriter(output, resume=resume) as out:
        todo = [r for r in records if r["id"] not in out.done]
        wanted = max(synthesize - len(out.done), 0) if synthesize else len(todo)
        if wanted:
            engine = backends.build(
                backend, model, dtype=dtype, device=device, batch_size=batch_size, chat_template=chat_template
            )
            with console.progress("synthesizing" if synthesize else "answering", wanted, quiet) as advance:
                if synthesize:
                    made = stage.synthesize(
                        records, engine, wanted, params, shots=shots, skip_ids=frozenset(out.done), advance=advance
                    )
                else:
                    made = stage.answer(todo, engine, params, advance)
                for record in made:
                    out.write(record)
    if not quiet:
        tokens = engine.generated_tokens if wanted else 0
        rate = tokens / timer.seconds if timer.seconds else 0.0
        where = "stdout" if output == "-" else output
        resumed = f" ({len(out.done)} resumed)" if out.done else ""
        console.say(
            f"redteam: {out.count} records{resumed} -> {where}; {tokens} tokens in {timer.seconds:.1f} s ({rate:.1f} tok/s)"
        )
        if synthesize and out.count < wanted:
            console.say(f"redteam: only {out.count} of {wanted} synthesized prompts were new and usable")


constitution_app = typer.Typer(name="constitution", help="Show and check constitutions.", no_args_is_help=True)
app.add_typer(constitution_app)
ConstitutionArg = Annotated[
    str, typer.Argument(help="Built-in name (default, helpful-only), a TOML/JSON file or a directory.")
]


@command("show", group=constitution_app)
def constitution_show(path: ConstitutionArg = "default"):
    """Print a constitution's principles, comparisons and few-shot examples as tables.

    Example: caikit constitution show ../shared/data/anthropic-cai/prompts
    """
    from rich.console import Console
    from rich.table import Table

    from caikit import constitution

    const = constitution.load(path)
    out = Console()
    out.print(f"[bold]{const.name}[/bold]  hash {const.hash}  ({const.source})")
    if const.description:
        out.print(const.description)
    principles = Table("id", "critique request", "revision request", title=f"{len(const.principles)} critique/revision principles")
    for p in const.principles:
        principles.add_row(p.id, p.critique, p.revision)
    comparisons = Table("id", "kind", "question", title=f"{len(const.comparisons)} comparison principles")
    for c in const.comparisons:
        comparisons.add_row(c.id, c.kind, c.question)
    for table in (principles, comparisons):
        if table.row_count:
            out.print(table)
    out.print(
        f"few-shot: {len(const.critique_examples)} critique/revision dialogues, "
        f"{len(const.comparison_examples)} comparison examples"
    )


@command("validate", group=constitution_app)
def constitution_validate(path: ConstitutionArg):
    """Report every problem in a constitution (with its location); exit 2 if there is any.

    Example: caikit constitution validate constitutions/default.toml
    """
    from caikit import constitution

    const, problems = constitution.read(path)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(2)
    typer.echo(
        f"{const.source}: ok ({len(const.principles)} principles, {len(const.comparisons)} comparisons, "
        f"{len(const.critique_examples) + len(const.comparison_examples)} few-shot examples; hash {const.hash})"
    )


Constitution = Annotated[
    str, typer.Option("--constitution", help="Built-in name (default, helpful-only), TOML/JSON file or directory.")
]


@command()
def revise(
    input: Input = "-",
    output: Output = "-",
    constitution: Constitution = "default",
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Critique -> revision rounds (the paper used 4).")] = 4,
    no_critique: Annotated[
        bool, typer.Option("--no-critique", help="Revise directly, without a critique step (half the cost).")
    ] = False,
    context: Annotated[
        str, typer.Option("--context", help="append: each round sees the whole chain; fresh: prompt + last revision.")
    ] = "append",
    shots: Annotated[int, typer.Option("--shots", min=0, help="Few-shot dialogues from the constitution per record.")] = 2,
    principles: Annotated[
        Optional[str], typer.Option("--principles", help="Comma-separated principle ids to draw from (default: all).")
    ] = None,
    emit_round: Annotated[
        Optional[int], typer.Option("--emit-round", min=1, help="Write round K's revision as the completion (SL-CAI-K).")
    ] = None,
    keep_all: Annotated[
        bool, typer.Option("--keep-all", help="Write one record per round (id suffixed -rK).")
    ] = False,
    critique_tokens: Annotated[int, typer.Option("--critique-tokens", min=1, help="Most tokens per critique.")] = 128,
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.95,
    model: Model = "smollm2-135m-instruct",
    backend: Backend = "transformers",
    dtype: Dtype = "auto",
    device: Device = "auto",
    chat_template: ChatTemplate = None,
    batch_size: BatchSize = 16,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="Records revised together (written when their rounds finish).")
    ] = 64,
    seed: Seed = 0,
    limit: Limit = None,
    resume: Resume = False,
    quiet: Quiet = False,
):
    """Critique and revise redteam answers over N rounds, one constitution principle drawn per round.

    Produces the SL-CAI data: each record's `completion` becomes the final revision; `initial` keeps
    the original answer and `revisions` every round's {round, principle_id, critique, revision}.

    Example: caikit redteam -i prompts.jsonl | caikit revise --rounds 2 > sl.jsonl
    """
    from caikit import backends, console, inputs
    from caikit import constitution as constitutions
    from caikit import revise as stage
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet)
    if context not in stage.CONTEXTS:
        raise CaikitError(f"--context {context}: choose append or fresh")
    if emit_round and emit_round > rounds:
        raise CaikitError(f"--emit-round {emit_round}: only {rounds} rounds are run")
    if emit_round and keep_all:
        raise CaikitError("--emit-round and --keep-all do not go together")
    params = backends.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    const = constitutions.load(constitution)
    chosen = const.select([p.strip() for p in principles.split(",") if p.strip()] if principles else None)
    if not chosen:
        raise CaikitError(f"--constitution {constitution}: it has no critique/revision principles")
    records = inputs.read_completions(input)
    records = records[:limit] if limit else records
    timer = console.Timer()
    failed = 0
    with JsonlWriter(output, resume=resume) as out:
        last = f"-r{rounds}" if keep_all else ""
        todo = [r for r in records if r["id"] + last not in out.done]
        if todo:
            engine = backends.build(
                backend, model, dtype=dtype, device=device, batch_size=batch_size, chat_template=chat_template
            )
            with console.progress(f"revising ({rounds} rounds)", len(todo), quiet) as advance:
                made = stage.run(
                    todo, engine, const, params, rounds=rounds, critique=not no_critique, context=context,
                    shots=shots, principles=chosen, critique_tokens=critique_tokens, chunk_size=chunk_size,
                    emit_round=emit_round, keep_all=keep_all, advance=advance,
                )
                for record in made:
                    out.write(record)
                    failed += sum(1 for step in record["revisions"] if step.get("failed")) if not keep_all else 0
    if not quiet:
        tokens = engine.generated_tokens if todo else 0
        console.say(
            f"revise: {len(todo)} records x {rounds} rounds -> {'stdout' if output == '-' else output}"
            f"{f' ({len(out.done)} resumed)' if out.done else ''}; {failed} failed rounds kept the previous text; "
            f"{tokens} tokens in {timer.seconds:.1f} s"
        )

@command()
def sft(
    input: Annotated[str, typer.Option("-i", "--input", help="Prompt-completion JSONL (e.g. revise output).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output model dir (written atomically).")],
    mix: Annotated[
        Optional[list[str]],
        typer.Option("--mix", help="FILE:WEIGHT, repeatable: add WEIGHT x len(input) examples from FILE."),
    ] = None,
    base_model: Annotated[
        str,
        typer.Option(
            "--base-model",
            help="Model to fine-tune. The paper fine-tunes the *pretrained* model; caikit defaults to the embedded "
            "chat model because its pretrained checkpoint is not shipped.",
        ),
    ] = "smollm2-135m-instruct",
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter (peft) instead of all weights.")] = False,
    lora_r: LoraRank = 16,
    lora_alpha: LoraAlpha = 32,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", min=0.0, max=1.0, help="LoRA dropout.")] = 0.05,
    lora_targets: Annotated[
        str, typer.Option("--lora-targets", help="all-linear, or comma-separated module names (q_proj,v_proj).")
    ] = "all-linear",
    keep_adapter: Annotated[
        bool, typer.Option("--keep-adapter", help="Also keep the LoRA adapter in DIR/adapter (the model is merged).")
    ] = False,
    epochs: Annotated[float, typer.Option("--epochs", min=0.0, help="Passes over the data.")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N optimizer steps (overrides --epochs).")] = -1,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate (default 2e-5 full, 2e-4 LoRA).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Examples per device batch.")] = 4,
    grad_accum: GradAccum = 1,
    max_length: Annotated[int, typer.Option("--max-length", min=16, help="Truncate examples to N tokens.")] = 1024,
    eval_split: Annotated[
        float, typer.Option("--eval-split", min=0.0, max=0.9, help="Fraction held out for eval loss.")
    ] = 0.0,
    save_steps: SaveSteps = 50,
    seed: Seed = 0,
    dtype: Dtype = "auto",
    device: Device = "auto",
    chat_template: ChatTemplate = None,
    overwrite: Overwrite = False,
    resume: ResumeTraining = False,
    quiet: Quiet = False,
):
    """Fine-tune on revisions (SL-CAI) with TRL's SFTTrainer; loss on the completion only.

    Writes a plain HF model dir (safetensors, tokenizer, chat template; LoRA merged) that `--model DIR`
    accepts everywhere, plus caikit_train.json (data hashes, counts, hyperparameters, losses, time).

    Example: caikit sft -i runs/sl.jsonl --mix runs/helpful.jsonl:0.5 -o runs/sl-cai --lora
    """
    from caikit import console, training
    from caikit import sft as stage

    console.setup_logging(quiet)
    mixes = [training.parse_weighted(m, "--mix") for m in mix or []]
    if keep_adapter and not lora:
        raise CaikitError("--keep-adapter needs --lora")
    options = stage.SftOptions(
        base_model=base_model, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
        grad_accum=grad_accum, max_length=max_length, seed=seed, eval_split=eval_split, save_steps=save_steps,
        lora=stage.LoraOptions(lora_r, lora_alpha, lora_dropout, lora_targets) if lora else None,
        keep_adapter=keep_adapter, device=device, dtype=dtype, chat_template=chat_template,
    )
    report = stage.run(input, mixes, output, options, overwrite=overwrite, resume=resume, quiet=quiet)
    if not quiet:
        _summary("sft", output, report)


def _summary(stage: str, output: Path, report: dict) -> None:
    """The end-of-training table on stderr."""
    from rich.table import Table

    from caikit.console import stderr

    table = Table(title=f"caikit {stage} -> {output}", show_header=False)
    for source in report.get("data", []):
        weight = f", weight {source['weight']:g}" if "weight" in source else ""
        table.add_row("data", f"{source['path']} ({source['used']} of {source['records']} records{weight})")
    for key, value in report.get("examples", {}).items():
        table.add_row(f"{key} examples", str(value))
    for key, value in report.get("metrics", {}).items():
        if value is not None:
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("seconds", str(report.get("seconds")))
    stderr().print(table)


@command()
def label(
    input: Input = "-",
    output: Output = "-",
    policy: Annotated[
        Optional[str],
        typer.Option("--policy", help="Sample responses from this model for prompts in INPUT (else INPUT holds pairs)."),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=2, help="Responses sampled per prompt (all pairs labelled).")] = 2,
    feedback_model: Annotated[str, typer.Option("--feedback-model", help="The model that judges.")] = "smollm2-135m-instruct",
    constitution: Constitution = "default",
    kind: Annotated[
        str, typer.Option("--kind", help="Comparison principles to draw: harmlessness, helpfulness or all.")
    ] = "harmlessness",
    principles_per_label: Annotated[
        int, typer.Option("--principles-per-label", help="K principles averaged per label (K > 1: an ensemble).")
    ] = 1,
    debias: Annotated[bool, typer.Option("--debias/--no-debias", help="Score both option orders and average.")] = True,
    cot: Annotated[bool, typer.Option("--cot", help="Chain-of-thought: reason first, then score the answer.")] = False,
    cot_samples: Annotated[int, typer.Option("--cot-samples", help="Reasoning chains averaged per order.")] = 1,
    clamp: Annotated[str, typer.Option("--clamp", help="LO,HI: clamp CoT probabilities (the paper's best: 0.4,0.6).")] = "0.4,0.6",
    few_shot: Annotated[bool, typer.Option("--few-shot", help="Show the constitution's comparison examples first.")] = False,
    min_margin: Annotated[float, typer.Option("--min-margin", min=0.0, max=0.5, help="Drop pairs with |p - 0.5| < M.")] = 0.0,
    hard: Annotated[bool, typer.Option("--hard", help="Write hard labels (1.0) instead of soft ones.")] = False,
    check_human: Annotated[
        Optional[str],
        typer.Option("--check-human", help="Human-labelled pairs ({chosen, rejected}): report how often the AI agrees."),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="Prompt file format with --policy (as redteam).")] = "auto",
    max_new_tokens: MaxNewTokens = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature for --policy and CoT.")] = 1.0,
    top_p: TopP = 0.95,
    backend: Backend = "transformers",
    dtype: Dtype = "auto",
    device: Device = "auto",
    chat_template: ChatTemplate = None,
    batch_size: BatchSize = 16,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Pairs scored and written together.")] = 32,
    seed: Seed = 0,
    limit: Limit = None,
    resume: Resume = False,
    quiet: Quiet = False,
):
    """AI feedback: a feedback model picks (A) or (B) under a comparison principle; soft labels from log-probs.

    Input: prompts with --policy (K responses are sampled per prompt and every pair is labelled), or
    pairs: {prompt, completion_a, completion_b}, {prompt, chosen, rejected}, or hh-rlhf transcripts.
    Output: TRL conversational preference records {id, prompt, chosen, rejected, label = p(chosen
    better)}, with per-principle probabilities for both option orders and provenance.

    Example: caikit label -i runs/redteam.jsonl --policy runs/sl-cai -o runs/labels.jsonl
    """
    from caikit import backends, console, inputs
    from caikit import constitution as constitutions
    from caikit import label as stage
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet)
    try:
        lo, hi = (float(x) for x in clamp.split(","))
    except ValueError:
        raise CaikitError(f"--clamp {clamp}: expected LO,HI such as 0.4,0.6") from None
    if not (0 <= lo <= hi <= 1):
        raise CaikitError(f"--clamp {clamp}: need 0 <= LO <= HI <= 1")
    if principles_per_label < 1:
        raise CaikitError(f"--principles-per-label {principles_per_label}: must be at least 1")
    if cot_samples < 1:
        raise CaikitError(f"--cot-samples {cot_samples}: must be at least 1")
    if kind not in ("harmlessness", "helpfulness", "all"):
        raise CaikitError(f"--kind {kind}: choose harmlessness, helpfulness or all")
    if check_human and policy:
        raise CaikitError("--check-human labels the human pairs in FILE; it does not go with --policy")
    const = constitutions.load(constitution)
    comparisons = [c for c in const.comparisons if kind == "all" or c.kind == kind]
    if len(comparisons) < principles_per_label:
        raise CaikitError(
            f"--principles-per-label {principles_per_label}: the constitution has {len(comparisons)} {kind} comparison principles"
        )
    sample_params = backends.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    options = stage.LabelOptions(
        principles_per_label=principles_per_label, debias=debias, cot=cot, cot_samples=cot_samples, clamp=(lo, hi),
        few_shot=few_shot, seed=seed, chunk_size=chunk_size,
        cot_params=backends.SamplingParams(max_new_tokens=128, temperature=max(temperature, 0.1), top_p=top_p, seed=seed),
    )
    build = functools.partial(
        backends.build, backend, dtype=dtype, device=device, batch_size=batch_size, chat_template=chat_template
    )
    source = check_human or input
    skipped = {"identical": 0, "empty": 0, "min_margin": 0}
    if policy:
        prompts = inputs.read_prompts(source, format)
        prompts = prompts[:limit] if limit else prompts
    else:
        pairs, counts = inputs.read_pairs(source)
        skipped.update(counts)
        pairs = pairs[:limit] if limit else pairs
    timer = console.Timer()
    kept: list[dict] = []
    with JsonlWriter(output, resume=resume) as out:
        judge = None
        if policy:
            labelled = {i.rsplit("-", 2)[0] for i in out.done}
            todo = [r for r in prompts if r["id"] not in labelled]
            if todo:
                sampler = build(policy)
                with console.progress(f"sampling {samples} responses", len(todo), quiet) as advance:
                    texts = sampler.generate([r["prompt"] for r in todo], replace(sample_params, n=samples))
                    advance(len(todo))
                judge = sampler if feedback_model == policy else None
                pairs = stage.make_pairs(todo, [texts[k * samples : (k + 1) * samples] for k in range(len(todo))])
                for pair in pairs:
                    skipped["identical"] += pair["a"].strip() == pair["b"].strip()
                    skipped["empty"] += not (pair["a"].strip() and pair["b"].strip())
                pairs = [p for p in pairs if p["a"].strip() and p["b"].strip() and p["a"].strip() != p["b"].strip()]
            else:
                pairs = []
        else:
            pairs = [p for p in pairs if p["id"] not in out.done]
        if pairs:
            judge = judge or build(feedback_model)
            with console.progress("labelling pairs", len(pairs), quiet) as advance:
                for record in stage.label_pairs(pairs, judge, const, comparisons, options, advance):
                    if abs(record["p_a"] - 0.5) < min_margin:
                        skipped["min_margin"] += 1
                        continue
                    if hard:
                        record["soft_label"], record["label"] = record["label"], 1.0
                    kept.append(record)
                    out.write(record)
    if not quiet:
        _label_summary(kept, skipped, timer.seconds, output, check_human)


def _label_summary(records, skipped, seconds, output, check_human):
    from rich.table import Table

    from caikit.console import stderr
    from caikit.label import summarize, wilson

    stats = summarize(records)
    table = Table(title=f"caikit label -> {'stdout' if output == '-' else output}", show_header=False)
    table.add_row("pairs labelled", str(stats["pairs"]))
    for reason, count in skipped.items():
        if count:
            table.add_row(f"skipped ({reason.replace('_', ' ')})", str(count))
    if records:
        table.add_row("mean label p(chosen)", f"{stats['mean_label']:.3f}")
        table.add_row("mean confidence |2p-1|", f"{stats['mean_confidence']:.3f}")
        if stats["position_bias"] is not None:
            table.add_row("position bias p(first slot)", f"{stats['position_bias']:.3f}")
        for pid, share in stats["principle_agreement"].items():
            table.add_row(f"agreement with ensemble: {pid}", f"{share:.2f}")
    if check_human and records:
        agree = sum(r["p_a"] > 0.5 for r in records)
        lo, hi = wilson(agree, len(records))
        table.add_row("AI agrees with the human choice", f"{agree / len(records):.3f} (95% CI {lo:.3f}-{hi:.3f}, n={len(records)})")
    table.add_row("seconds", f"{seconds:.1f} ({len(records) / seconds if seconds else 0:.2f} pairs/s)")
    stderr().print(table)


@command("train-pm")
def train_pm(
    data: Annotated[
        list[str],
        typer.Option("--data", help="FILE[:WEIGHT], repeatable: label output or human pairs; WEIGHT x its size is used."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output preference-model dir (written atomically).")],
    base_model: Annotated[str, typer.Option("--base-model", help="Causal LM to put a reward head on.")] = "smollm2-135m-instruct",
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter (merged at the end) plus the head.")] = False,
    lora_r: LoraRank = 16,
    lora_alpha: LoraAlpha = 32,
    lora_targets: Annotated[str, typer.Option("--lora-targets", help="all-linear or module names.")] = "all-linear",
    epochs: Annotated[float, typer.Option("--epochs", min=0.0, help="Passes over the data.")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N optimizer steps.")] = -1,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate (default 1e-5 full, 1e-4 LoRA).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pairs per device batch.")] = 4,
    grad_accum: GradAccum = 1,
    max_length: Annotated[int, typer.Option("--max-length", min=16, help="Drop pairs longer than N tokens.")] = 1024,
    eval_split: Annotated[float, typer.Option("--eval-split", min=0.0, max=0.9, help="Fraction held out for metrics.")] = 0.1,
    center_rewards: Annotated[
        Optional[float], typer.Option("--center-rewards", min=0.0, help="Coefficient pulling mean rewards to 0.")
    ] = None,
    save_steps: SaveSteps = 50,
    seed: Seed = 0,
    dtype: Dtype = "auto",
    device: Device = "auto",
    chat_template: ChatTemplate = None,
    overwrite: Overwrite = False,
    resume: ResumeTraining = False,
    quiet: Quiet = False,
):
    """Train a preference model on soft AI labels (and human pairs) with TRL's RewardTrainer.

    The loss is the binary cross-entropy between sigma(r_chosen - r_rejected) and the soft label, as in
    the paper; human pairs ({chosen, rejected} transcripts) count as hard labels. Reports held-out
    pairwise accuracy, mean margin and calibration error (ECE) in caikit_train.json.

    Example: caikit train-pm --data runs/labels.jsonl --data hh.jsonl.gz:0.1 -o runs/pm
    """
    from caikit import console, training
    from caikit import pm as stage
    from caikit.sft import LoraOptions

    console.setup_logging(quiet)
    sources = [training.parse_weighted(d, "--data") for d in data]
    options = stage.PmOptions(
        base_model=base_model, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
        grad_accum=grad_accum, max_length=max_length, seed=seed, eval_split=eval_split,
        center_rewards=center_rewards, save_steps=save_steps,
        lora=LoraOptions(lora_r, lora_alpha, 0.05, lora_targets) if lora else None,
        device=device, dtype=dtype, chat_template=chat_template,
    )
    report = stage.run(sources, output, options, overwrite=overwrite, resume=resume, quiet=quiet)
    if not quiet:
        flat = dict(report)
        metrics = report["metrics"]
        part = metrics["held_out"] or metrics["train"]
        which = "held-out" if metrics["held_out"] else "train"
        flat["metrics"] = {
            "steps": metrics["steps"], "train_loss": metrics["train_loss"],
            f"{which} accuracy": part["accuracy"], f"{which} mean margin": part["mean_margin"], f"{which} ECE": part["ece"],
        }
        _summary("train-pm", output, flat)


eval_app = typer.Typer(name="eval", help="Evaluate models and preference models.", no_args_is_help=True)
app.add_typer(eval_app)


@command("pm", group=eval_app)
def eval_pm(
    pm: Annotated[Path, typer.Option("--pm", help="Preference-model dir (from caikit train-pm).")],
    data: Annotated[
        list[str], typer.Option("--data", help="Comparison file or directory, repeatable (438 HHH, BIG-bench JSON, pairs).")
    ],
    batch_size: BatchSize = 8,
    device: Device = "auto",
    limit: Limit = None,
    quiet: Quiet = False,
):
    """Accuracy of a preference model on HHH-style comparisons, with 95% intervals and per-subset rows.

    Prints the results as JSON on stdout and a table on stderr.

    Example: caikit eval pm --pm runs/pm --data ../shared/data/anthropic-cai/evals/438HHHEvaluations.jsonl
    """
    from rich.table import Table

    from caikit import console, evals
    from caikit.pm import PreferenceModel

    console.setup_logging(quiet)
    items = evals.load_items(data)
    items = items[:limit] if limit else items
    model = PreferenceModel(pm, device=device, batch_size=batch_size)
    results = {"pm": str(pm), "data": data, **evals.pm_accuracy(model, items)}
    typer.echo(json.dumps(results))
    if not quiet:
        table = Table("subset", "n", "accuracy", "95% CI", title=f"caikit eval pm: {pm}")
        rows = [("all", results)] + list(results["subsets"].items())
        for name, r in rows:
            table.add_row(name, str(r["n"]), f"{r['accuracy']:.3f}", f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}")
        console.stderr().print(table)


def _named(values: list[str] | None, option: str) -> dict[str, str]:
    named = {}
    for value in values or []:
        name, sep, spec = value.partition("=")
        if not sep or not name or not spec:
            raise CaikitError(f"{option} {value}: expected NAME=VALUE")
        if name in named:
            raise CaikitError(f"{option} {value}: the name {name} is used twice")
        named[name] = spec
    return named


@command("compare", group=eval_app)
def eval_compare(
    output: Annotated[Path, typer.Option("-o", "--output", help="Report dir: report.md, results.json, plots, judgments.")],
    model: Annotated[
        Optional[list[str]], typer.Option("--model", help="NAME=SPEC[@TEMPERATURE], repeatable: models to generate with.")
    ] = None,
    responses: Annotated[
        Optional[list[str]], typer.Option("--responses", help="NAME=FILE, repeatable: existing redteam-format answers.")
    ] = None,
    red_team: Annotated[Optional[str], typer.Option("--red-team", help="Red-team prompts: harmlessness ratings.")] = None,
    helpful: Annotated[Optional[str], typer.Option("--helpful", help="Helpful prompts: helpfulness ratings.")] = None,
    xstest: Annotated[Optional[str], typer.Option("--xstest", help="XSTest-style CSV (prompt,type,label): over-refusal.")] = None,
    pm: Annotated[Optional[Path], typer.Option("--pm", help="Preference model that judges pairs (and absolute scores).")] = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="Feedback model that judges pairs, both orders.")] = None,
    revisions: Annotated[Optional[str], typer.Option("--revisions", help="revise --keep-all output: PM score by round.")] = None,
    hhh: Annotated[
        Optional[list[str]], typer.Option("--hhh", help="HHH comparisons (e.g. 438HHHEvaluations.jsonl): the PM's accuracy.")
    ] = None,
    hhh_limit: Annotated[Optional[int], typer.Option("--hhh-limit", min=1, help="Use only the first N HHH comparisons.")] = None,
    constitution: Constitution = "default",
    max_new_tokens: MaxNewTokens = 128,
    temperature: Temperature = 0.7,
    backend: Backend = "transformers",
    batch_size: BatchSize = 16,
    dtype: Dtype = "auto",
    device: Device = "auto",
    seed: Seed = 0,
    limit: Limit = None,
    resume: Annotated[bool, typer.Option("--resume", help="Reuse responses and judgments already in the output dir.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print results.json on stdout.")] = False,
    quiet: Quiet = False,
):
    """Compare models: harmlessness and helpfulness Elo from AI judgments, over-refusal, absolute harm.

    Example: caikit eval compare --model base=smollm2-135m-instruct --model sl=runs/sl-cai
      --red-team examples/prompts/redteam.jsonl --helpful examples/prompts/helpful.jsonl
      --xstest ../shared/data/xstest/xstest_prompts.csv --judge smollm2-135m-instruct --pm runs/pm -o runs/eval
    """
    from caikit import backends, compare, console, inputs, redteam
    from caikit import constitution as constitutions
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet)
    specs, files = _named(model, "--model"), _named(responses, "--responses")
    names = list(specs) + [n for n in files if n not in specs]
    if len(names) < 2 or set(specs) & set(files):
        raise CaikitError("--model/--responses: give at least 2 distinct model names to compare")
    if not (red_team or helpful):
        raise CaikitError("--red-team or --helpful: give at least one prompt set")
    if not (pm or judge):
        raise CaikitError("--pm or --judge: give something that judges")
    sets = {}
    for kind, path in (("harmlessness", red_team), ("helpfulness", helpful)):
        if path:
            records = inputs.read_prompts(path)
            sets[kind] = records[:limit] if limit else records
    xs = None
    if xstest:
        xs = inputs.read_prompts(xstest)
        if limit:  # keep both kinds: half safe rows, half unsafe ones
            safe = [r for r in xs if str(r.get("label", "")).lower() != "unsafe"]
            unsafe = [r for r in xs if str(r.get("label", "")).lower() == "unsafe"]
            xs = safe[: (limit + 1) // 2] + unsafe[: limit // 2]
    given = {name: {r["id"]: r["completion"][-1]["content"] for r in inputs.read_completions(path)} for name, path in files.items()}
    const = constitutions.load(constitution)
    build = functools.partial(backends.build, backend, dtype=dtype, device=device, batch_size=batch_size)
    engines: dict = {}
    (output / "responses").mkdir(parents=True, exist_ok=True)

    def answers_for(name, kind, records):
        if name in given:
            missing = [r for r in records if r["id"] not in given[name]]
            if missing:
                raise CaikitError(
                    f"--responses {name}={files[name]}: no response for {len(missing)} of the {len(records)} {kind} prompts "
                    "(the prompt sets do not match)"
                )
            return given[name]
        spec, _, temp = specs[name].partition("@")
        params = backends.SamplingParams(max_new_tokens=max_new_tokens, temperature=float(temp) if temp else temperature, seed=seed)
        path = output / "responses" / f"{name}.{kind}.jsonl"
        with JsonlWriter(str(path), resume=resume) as out:
            todo = [r for r in records if r["id"] not in out.done]
            if todo:
                if spec not in engines:
                    engines[spec] = build(spec)
                with console.progress(f"{name}: answering {kind} prompts", len(todo), quiet) as advance:
                    for record in redteam.answer(todo, engines[spec], params, advance):
                        out.write(record)
        return {r["id"]: r["completion"][-1]["content"] for r in inputs.read_completions(str(path))}

    preference = None
    if pm:
        from caikit.pm import PreferenceModel

        preference = PreferenceModel(pm, device=device, batch_size=batch_size)
    judge_backend = build(judge) if judge else None
    rows = inputs.read_completions(revisions) if revisions else None
    if hhh and not pm:
        raise CaikitError("--hhh needs --pm (it measures the preference model)")
    hhh_items = None
    if hhh:
        from caikit import evals

        hhh_items = evals.load_items(hhh)[:hhh_limit] if hhh_limit else evals.load_items(hhh)
    results = compare.run(output, answers_for=answers_for, names=names, sets=sets, xstest=xs, pm=preference,
                          judge=judge_backend, const=const, revisions=rows, hhh=hhh_items, seed=seed, resume=resume)
    if json_out:
        typer.echo(json.dumps(results))
    if not quiet:
        from rich.table import Table

        for kind, sources in results["elo"].items():
            for source, table in sources.items():
                t = Table("model", "Elo", "95% CI", title=f"{kind} ({source})")
                for name, row in table.items():
                    t.add_row(name, f"{row['elo']:.0f}", f"{row['ci95'][0]:.0f}-{row['ci95'][1]:.0f}")
                console.stderr().print(t)
        console.say(f"eval compare: report in {output / 'report.md'}")


@command("mc", group=eval_app)
def eval_mc(
    data: Annotated[list[str], typer.Option("--data", help="Questions: the paper's JSONL, BIG-bench JSON, {question, options, answer}.")],
    model: Annotated[Optional[str], typer.Option("--model", help="Feedback model answering by option log-probs.")] = None,
    pm: Annotated[Optional[Path], typer.Option("--pm", help="Or a preference model scoring each option's response.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Score the prompt as raw text instead of a chat turn.")] = False,
    backend: Backend = "transformers",
    batch_size: BatchSize = 16,
    dtype: Dtype = "auto",
    device: Device = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Shuffles BIG-bench options (the correct one is often listed first).")] = 0,
    limit: Limit = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print {accuracy, n, ci95, subsets} on stdout.")] = False,
    quiet: Quiet = False,
):
    """Multiple-choice accuracy of a feedback model (or a PM) on HHH-style evals, per subset with 95% CIs.

    Example: caikit eval mc --model smollm2-135m-instruct --data ../shared/data/anthropic-cai/evals/438HHHEvaluations.jsonl --json
    """
    from rich.table import Table

    from caikit import backends, console, evals

    console.setup_logging(quiet)
    if bool(model) == bool(pm):
        raise CaikitError("--model or --pm: give exactly one")
    if pm:
        from caikit.pm import PreferenceModel

        items = evals.load_items(data)
        items = items[:limit] if limit else items
        results = evals.pm_accuracy(PreferenceModel(pm, device=device, batch_size=batch_size), items)
    else:
        items = evals.mc_items(data, seed)
        items = items[:limit] if limit else items
        engine = backends.build(backend, model, dtype=dtype, device=device, batch_size=batch_size)
        results = evals.mc_accuracy(engine, items, raw=raw)
    if json_out:
        typer.echo(json.dumps(results))
    if not quiet:
        table = Table("subset", "n", "accuracy", "95% CI", title=f"caikit eval mc: {model or pm}")
        for name, r in [("all", results)] + list(results["subsets"].items()):
            table.add_row(name, str(r["n"]), f"{r['accuracy']:.3f}", f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}")
        console.stderr().print(table)


@command()
def rlaif(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output policy dir (written atomically).")],
    policy: Annotated[str, typer.Option("--policy", help="Starting policy (e.g. the SL-CAI model from caikit sft).")] = "smollm2-135m-instruct",
    reward: Annotated[
        Optional[str],
        typer.Option(
            "--reward",
            help="PM_DIR (a caikit train-pm model; scored on decoded text with the PM's own tokenizer) or "
            "feedback:MODEL (direct RLAIF: the feedback model's debiased probability, under a sampled comparison "
            "principle, that the response beats the starting policy's greedy answer; in [0, 1]).",
        ),
    ] = None,
    prompts: Annotated[
        Optional[list[str]], typer.Option("--prompts", help="FILE[:WEIGHT], repeatable: RL prompts (any redteam format).")
    ] = None,
    algo: Annotated[str, typer.Option("--algo", help="rloo (default), grpo, or dpo (offline, on --data).")] = "rloo",
    data: Annotated[Optional[list[str]], typer.Option("--data", help="DPO: label output / preference pairs, repeatable.")] = None,
    kl_coef: Annotated[float, typer.Option("--kl-coef", help="KL penalty to the starting policy (TRL's beta).")] = 0.05,
    num_generations: Annotated[int, typer.Option("--num-generations", min=2, help="Completions per prompt (group size).")] = 4,
    max_new_tokens: MaxNewTokens = 64,
    temperature: Annotated[float, typer.Option("--temperature", min=0.01, help="Sampling temperature for rollouts.")] = 1.0,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Learning rate.")] = 1e-6,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps (overrides --epochs).")] = -1,
    epochs: Annotated[float, typer.Option("--epochs", min=0.0, help="Passes over the prompts.")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts per step (x --num-generations completions).")] = 2,
    feedback_mode: Annotated[
        str, typer.Option("--feedback-mode", help="Direct RLAIF reward: vs-reference (default) or absolute.")
    ] = "vs-reference",
    constitution: Constitution = "default",
    label_smoothing: Annotated[
        str, typer.Option("--label-smoothing", help="DPO: cDPO label noise, a number or auto (mean 1 - soft label).")
    ] = "0",
    min_margin: Annotated[float, typer.Option("--min-margin", min=0.0, max=0.5, help="DPO: drop pairs with |label - 0.5| < M.")] = 0.0,
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter (merged at the end).")] = False,
    lora_r: LoraRank = 16,
    save_steps: SaveSteps = 50,
    seed: Seed = 0,
    dtype: Dtype = "auto",
    device: Device = "auto",
    overwrite: Overwrite = False,
    resume: ResumeTraining = False,
    quiet: Quiet = False,
):
    """Reinforcement learning from AI feedback: RLOO/GRPO against a preference model with a KL penalty, or DPO.

    Examples:
      caikit rlaif --policy runs/sl-cai --reward runs/pm --prompts runs/redteam.jsonl --prompts helpful.jsonl:0.5 -o runs/rl-cai
      caikit rlaif --policy runs/sl-cai --reward feedback:smollm2-135m-instruct --prompts p.jsonl -o runs/rl-direct
      caikit rlaif --policy runs/sl-cai --algo dpo --data runs/labels.jsonl --label-smoothing auto -o runs/dpo
    """
    from caikit import backends, console, training
    from caikit import constitution as constitutions
    from caikit import rlaif as stage
    from caikit.sft import LoraOptions

    console.setup_logging(quiet)
    if algo not in stage.ALGOS:
        raise CaikitError(f"--algo {algo}: choose rloo, grpo or dpo")
    if kl_coef < 0:
        raise CaikitError(f"--kl-coef {kl_coef}: must be >= 0")
    if feedback_mode not in ("vs-reference", "absolute"):
        raise CaikitError(f"--feedback-mode {feedback_mode}: choose vs-reference or absolute")
    options = stage.RlOptions(
        algo=algo, kl_coef=kl_coef, num_generations=num_generations, max_new_tokens=max_new_tokens,
        temperature=temperature, lr=lr, steps=steps, epochs=epochs, batch_size=batch_size,
        lora=LoraOptions(r=lora_r, alpha=2 * lora_r) if lora else None, seed=seed, save_steps=save_steps,
        device=device, dtype=dtype, label_smoothing=label_smoothing, min_margin=min_margin,
    )
    reward_fn, described = None, None
    sources = [training.parse_weighted(p, "--prompts") for p in prompts or []]
    if algo != "dpo":
        if not reward:
            raise CaikitError(f"--algo {algo} needs --reward PM_DIR or --reward feedback:MODEL")
        if not sources:
            raise CaikitError(f"--algo {algo} needs --prompts FILE")
        if output.exists() and not overwrite:
            raise CaikitError(f"-o {output}: already exists; pass --overwrite to replace it")
        if reward.startswith("feedback:"):
            const = constitutions.load(constitution)
            comparisons = [c for c in const.comparisons if c.kind == "harmlessness"] or const.comparisons
            judge = backends.build("transformers", reward.removeprefix("feedback:"), dtype=dtype, device=device)
            rows, _ = stage.read_prompt_sources(sources, seed)
            start_policy = judge if reward.removeprefix("feedback:") == policy else backends.build("transformers", policy, dtype=dtype, device=device)
            references = stage.reference_answers(start_policy, [r["prompt"] for r in rows], max_new_tokens)
            reward_fn = stage.FeedbackReward(judge, comparisons, references, feedback_mode, seed)
            described = {"kind": "feedback", "model": reward.removeprefix("feedback:"), "mode": feedback_mode,
                         "constitution": const.provenance()}
        else:
            from caikit.pm import PreferenceModel

            reward_fn = stage.PMReward(PreferenceModel(reward, device=device, option="--reward"))
            described = {"kind": "pm", "path": reward}
    report = stage.run(
        policy, output, options, reward=reward_fn, reward_description=described, prompts=sources, data=data or [],
        overwrite=overwrite, resume=resume, quiet=quiet,
    )
    if not quiet:
        _summary("rlaif", output, report)


@command()
def inspect(
    input: Annotated[str, typer.Argument(help="A caikit JSONL file (or any JSONL of records); - reads stdin.")] = "-",
    show: Annotated[int, typer.Option("--show", min=0, help="Pretty-print the first N (filtered) records.")] = 0,
    where: Annotated[
        Optional[list[str]], typer.Option("--where", help="Filter: PATH=V, PATH!=V, PATH>N, PATH<N, PATH~TEXT (repeatable, ANDed).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
):
    """Summarize a caikit JSONL file: stages, fields, lengths, principles, labels, provenance.

    Examples: caikit inspect runs/quickstart/sl.jsonl --show 2
              caikit inspect runs/quickstart/labels.jsonl --where "label>0.7" --json
    """
    from rich.console import Console

    from caikit import inputs, inspection

    keep = [inspection.parse_filter(w) for w in where or []]
    records = [row for _, row in inputs.read_jsonl(input) if all(k(row) for k in keep)]
    summary = inspection.summarize(records)
    if json_out:
        typer.echo(json.dumps(summary))
        return
    console = Console()
    inspection.render_summary(console, input, summary)
    for number, record in enumerate(records[:show], start=1):
        inspection.render_record(console, record, number)


def main():
    app()


if __name__ == "__main__":
    main()
