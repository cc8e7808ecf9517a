"""Data stages: `redteam`, `revise`, `label` (JSONL in, JSONL out, resumable)."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from dataclasses import replace

from caikit.backends import SamplingParams, for_scoring
from caikit.cli.app import command
from caikit.cli.options import (
    CheckHuman, CheckLimit, ChunkSize, Clamp, Constitution, Engine, FeedbackModel, Input, Kind, Limit, MinMargin, Model, Output,
    Policy, PrinciplesPerLabel, Quiet, Resume, ShardOption, Shots, choice, clamp_range, destination, engine, sampling,
    with_options,
)
from caikit.errors import CaikitError, FailedCheck
from caikit.inputs import FORMATS
from caikit.records import Selection
from caikit.revise import CONTEXTS

Format = Annotated[str, choice("--format", FORMATS, "Input format: auto, jsonl, csv, txt or hh (hh-rlhf transcripts).", "format")]


@command()
@with_options(engine, sampling)
def redteam(
    input: Input = "-",
    output: Output = "-",
    format: Format = "auto",
    prompt_field: Annotated[str, typer.Option("--prompt-field", help="CSV column holding the prompt.")] = "prompt",
    keep_history: Annotated[bool, typer.Option("--keep-history", help="hh-rlhf: keep the conversation up to the last human turn.")] = False,
    synthesize: Annotated[int, typer.Option("--synthesize", min=0, help="Write N new red-team prompts few-shot instead of answering.")] = 0,
    shots: Shots = 6,
    model: Model = "smollm2-135m-instruct",
    limit: Limit = None,
    shard: ShardOption = None,
    resume: Resume = False,
    quiet: Quiet = False,
    engine: Engine = None,
    sampling: SamplingParams = None,
):
    """Answer red-team prompts with the initial (helpful-only) model.

    Reads prompts (JSONL `prompt`/`messages`, CSV, plain text or hh-rlhf transcripts) and writes one
    JSONL record per prompt in TRL's conversational prompt-completion format, with a stable `id` and
    a `caikit` provenance field.

    Example: caikit redteam -i examples/prompts/redteam.jsonl -o runs/redteam.jsonl

    With --synthesize N it writes N new prompts instead, few-shot from the input prompts, as
    `{id, prompt}` records that redteam itself accepts: caikit redteam -i seeds.jsonl --synthesize 100
    """
    from caikit import console, inputs, reading, redteam as stage
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet)
    stage.check(synthesize=synthesize, shots=shots, sharded=shard is not None)
    read = lambda: inputs.iter_prompts(input, format, prompt_field=prompt_field, keep_history=keep_history)  # noqa: E731
    timer, tokens = console.Timer(), 0
    with reading.replayable(input), JsonlWriter(output, resume=resume, inputs=(input,)) as out:
        todo = Selection(read, limit=limit, shard=shard, skip=lambda r: r["id"] in out.done)
        wanted = max(synthesize - len(out.done), 0) if synthesize else todo.count()  # (every record is checked first)
        if wanted:
            backend = engine.build(model)
            with console.progress("synthesizing" if synthesize else "answering", wanted, quiet) as advance:
                if synthesize:
                    made = stage.synthesize(list(Selection(read, limit=limit)), backend, wanted, sampling, shots=shots,
                                            skip_ids=frozenset(out.done), advance=advance)
                else:
                    made = stage.answer(todo, backend, sampling, advance)
                for record in made:
                    out.write(todo.mark(record))
            tokens = backend.generated_tokens
    if not quiet:
        resumed = f" ({len(out.done)} resumed)" if out.done else ""
        rate = tokens / timer.seconds if timer.seconds else 0.0
        console.say(f"redteam: {out.count} records{resumed} -> {destination(output)}; {tokens} tokens in {timer.seconds:.1f} s ({rate:.1f} tok/s)")
        if synthesize and out.count < wanted:
            console.say(f"redteam: only {out.count} of {wanted} synthesized prompts were new and usable")


@command()
@with_options(engine, sampling)
def revise(
    input: Input = "-",
    output: Output = "-",
    constitution: Constitution = "default",
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Critique -> revision rounds (the paper used 4).")] = 4,
    no_critique: Annotated[bool, typer.Option("--no-critique", help="Revise directly, without a critique step (half the cost).")] = False,
    context: Annotated[
        str, choice("--context", CONTEXTS, "append: each round sees the whole chain; fresh: prompt + last revision.")
    ] = "append",
    shots: Shots = 2,
    principles: Annotated[Optional[str], typer.Option("--principles", help="Comma-separated principle ids to draw from (default: all).")] = None,
    emit_round: Annotated[Optional[int], typer.Option("--emit-round", min=1, help="Write round K's revision as the completion (SL-CAI-K).")] = None,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="Write one record per round (id suffixed -rK).")] = False,
    critique_tokens: Annotated[int, typer.Option("--critique-tokens", min=1, help="Most tokens per critique.")] = 128,
    chunk_size: ChunkSize = 64,
    model: Model = "smollm2-135m-instruct",
    limit: Limit = None,
    shard: ShardOption = None,
    resume: Resume = False,
    quiet: Quiet = False,
    engine: Engine = None,
    sampling: SamplingParams = None,
):
    """Critique and revise redteam answers over N rounds, one constitution principle drawn per round.

    Produces the SL-CAI data: each record's `completion` becomes the final revision; `initial` keeps
    the original answer and `revisions` every round's {round, principle_id, critique, revision}.

    Example: caikit redteam -i prompts.jsonl | caikit revise --rounds 2 > sl.jsonl
    """
    from caikit import console, constitution as constitutions, inputs, reading, revise as stage
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet)
    const = constitutions.load(constitution)
    chosen = stage.check(const, rounds=rounds, emit_round=emit_round, keep_all=keep_all, principles=principles)
    timer, tokens, failed = console.Timer(), 0, 0
    with reading.replayable(input), JsonlWriter(output, resume=resume, inputs=(input,)) as out:
        todo = Selection(lambda: inputs.iter_completions(input), limit=limit, shard=shard, key=lambda r: re.sub(r"-r\d+$", "", r["id"]),
                         skip=lambda r: r["id"] + (f"-r{rounds}" if keep_all else "") in out.done)
        if total := todo.count():  # (every record is checked first)
            backend = engine.build(model)
            with console.progress(f"revising ({rounds} rounds)", total, quiet) as advance:
                for record in stage.run(todo, backend, const, sampling, rounds=rounds, critique=not no_critique, context=context,
                                        shots=shots, principles=chosen, critique_tokens=critique_tokens, chunk_size=chunk_size,
                                        emit_round=emit_round, keep_all=keep_all, advance=advance):
                    out.write(todo.mark(record))
                    failed += 0 if keep_all else sum(1 for step in record["revisions"] if step.get("failed"))
            tokens = backend.generated_tokens
    if not quiet:
        console.say(
            f"revise: {total} records x {rounds} rounds -> {destination(output)}{f' ({len(out.done)} resumed)' if out.done else ''}; "
            f"{failed} failed rounds kept the previous text; {tokens} tokens in {timer.seconds:.1f} s"
        )


def check_against_humans(feedback, const, comparisons, options, pairs: list[dict], minimum: float | None, quiet: bool) -> dict:
    """Label human-judged pairs in this run's mode and say whether the labels carry signal; with
    `minimum`, stop (exit 1) when the agreement's lower 95% bound is below it."""
    from caikit import calibration, console

    with console.progress("checking against human judgments", len(pairs), quiet) as advance:
        found, _ = calibration.measure(feedback, const, comparisons, pairs, options, progress=advance)
    lo, hi = found["ci95"]
    said = (f"agrees with the human choice on {found['agreement']:.1%} of {found['n']} pairs (95% CI {lo:.1%}-{hi:.1%}): "
            + ("the labels carry signal" if found["signal"] else "no measurable signal"))
    if minimum is not None and lo < minimum:
        raise FailedCheck(f"--min-agreement {minimum}: the feedback model {said}; lower bound {lo:.3f} < {minimum}; nothing labelled")
    console.say(f"label: the feedback model {said}")
    return found


@command()
@with_options(engine, sampling, temperature=1.0)
def label(
    input: Input = "-",
    output: Output = "-",
    policy: Policy = None,
    samples: Annotated[int, typer.Option("--samples", min=2, help="Responses sampled per prompt (all pairs labelled).")] = 2,
    feedback_model: FeedbackModel = "smollm2-135m-instruct",
    constitution: Constitution = "default",
    kind: Kind = "harmlessness",
    principles_per_label: PrinciplesPerLabel = 1,
    debias: Annotated[bool, typer.Option("--debias/--no-debias", help="Score both option orders and average.")] = True,
    cot: Annotated[bool, typer.Option("--cot", help="Chain-of-thought: reason first, then score the answer.")] = False,
    cot_samples: Annotated[int, typer.Option("--cot-samples", min=1, help="Reasoning chains averaged per order.")] = 1,
    clamp: Clamp = "0.4,0.6",
    few_shot: Annotated[bool, typer.Option("--few-shot", help="Show the constitution's comparison examples first.")] = False,
    min_margin: MinMargin = 0.0,
    hard: Annotated[bool, typer.Option("--hard", help="Write hard labels (1.0) instead of soft ones.")] = False,
    check_human: CheckHuman = None,
    check_limit: CheckLimit = 200,
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", min=0.0, max=1.0, help="With --check-human: exit 1, before labelling, if the agreement's lower 95% bound is below X.")] = None,
    format: Format = "auto",
    chunk_size: ChunkSize = 32,
    limit: Limit = None,
    shard: ShardOption = None,
    resume: Resume = False,
    quiet: Quiet = False,
    engine: Engine = None,
    sampling: SamplingParams = None,
):
    """AI feedback: a feedback model picks (A) or (B) under a comparison principle; soft labels from log-probs.

    Input: prompts with --policy (K responses are sampled per prompt and every pair is labelled), or
    pairs: {prompt, completion_a, completion_b}, {prompt, chosen, rejected}, or hh-rlhf transcripts.
    Output: TRL conversational preference records {id, prompt, chosen, rejected, label = p(chosen
    better)}, with per-principle probabilities for both option orders and provenance.

    Example: caikit label -i runs/redteam.jsonl --policy runs/sl-cai -o runs/labels.jsonl
    """
    from caikit import console, constitution as constitutions, label as stage, reading
    from caikit.calibration import human_pairs
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet)
    if min_agreement is not None and not check_human:
        raise CaikitError("--min-agreement needs --check-human FILE (the human pairs to measure against)")
    const = constitutions.load(constitution)
    options = stage.LabelOptions(principles_per_label=principles_per_label, debias=debias, cot=cot, cot_samples=cot_samples,
                                 clamp=clamp_range(clamp), few_shot=few_shot, seed=sampling.seed, chunk_size=chunk_size,
                                 cot_params=stage.cot_sampling(sampling))
    comparisons = stage.check(options, const, kind)
    human = human_pairs([check_human], check_limit, options.seed) if check_human else None  # (all data before any model)
    timer, kept, checked, feedback, skipped = console.Timer(), stage.Summary(), None, None, {}
    with reading.replayable(input), JsonlWriter(output, resume=resume, inputs=(input,)) as out:
        todo = stage.selection(input, format, prompts=bool(policy), skipped=skipped, limit=limit, shard=shard, done=out.done)
        total = todo.count()  # (every record is checked before a model is loaded)
        if human:  # before any label is written
            feedback = engine.build(feedback_model, scoring=True)
            checked = check_against_humans(feedback, const, comparisons, options, human, min_agreement, quiet)
        if total:
            sampler, feedback = label_models(engine, policy, feedback_model, feedback)
            for record in stage.run(todo, total, feedback, const, comparisons, options, policy=sampler, sampling=replace(sampling, n=samples) if policy else None,
                                    min_margin=min_margin, hard=hard, skipped=skipped, progress=console.progress_factory(quiet)):
                kept.add(record)
                out.write(todo.mark(record))
    if not quiet:
        console.table(f"caikit label -> {destination(output)}", stage.summary_rows(kept.result(), skipped, timer.seconds, checked))


def label_models(engine: Engine, policy: str | None, feedback_model: str, feedback):
    """The policy that samples (None for pairs) and the feedback model, one backend when they are the same model."""
    sampler = engine.build(policy) if policy else None
    if feedback is None:
        feedback = for_scoring(sampler) if policy == feedback_model else engine.build(feedback_model, scoring=True)
    return sampler, feedback
