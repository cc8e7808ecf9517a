"""Evaluation: `eval compare|labeler|mc|pm`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from caikit.cli.app import app, command, typer_app
from caikit.cli.options import (
    FEEDBACK_MODEL, SPEC_HELP, AllowPickle, BatchSize, CheckHuman, CheckLimit, Clamp, Constitution, Device, Dtype, Engine, Json, Kind,
    Limit, MaxNewTokens, PmDir, Quiet, Resume, Seed, ShardOption, Temperature, clamp_range, engine, first, named, sampling,
    with_options,
)
from caikit.backends import SamplingParams
from caikit.errors import CaikitError
from caikit.calibration import MODE_HELP

eval_app = typer_app(name="eval", help="Evaluate models and preference models.")
app.add_typer(eval_app)
EvalData = Annotated[
    list[str], typer.Option("-i", "--input", "--data", help="Data file or directory, repeatable: the paper's JSONL, BIG-bench JSON, pairs.")
]


def print_accuracy_table(title: str, results: dict) -> None:
    from rich.table import Table

    from caikit.console import stderr

    table = Table("subset", "n", "accuracy", "95% CI", title=title)
    for name, r in [("all", results)] + list(results["subsets"].items()):
        table.add_row(name, str(r["n"]), f"{r['accuracy']:.3f}", f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}")
    stderr().print(table)


def judge_against_humans(judge, const, pairs: list[dict], seed: int, quiet: bool) -> dict:
    """The judge's agreement with human choices (harmlessness principles, both orders)."""
    from caikit import calibration, console
    from caikit.label import LabelOptions

    comparisons = const.comparisons_for("harmlessness")
    with console.progress("checking the judge against human judgments", len(pairs), quiet) as advance:
        found, _ = calibration.measure(judge, const, comparisons, pairs, LabelOptions(seed=seed), progress=advance)
    return found


def answer_shard(answers, generated: dict, sets: dict, xs, shard, output: Path) -> None:
    """--shard I/N: only answer this shard's prompts with each --model; judging waits for the merge."""
    from caikit.console import say

    if not generated:
        raise CaikitError("--shard splits the answering by --model models; with only --responses there is nothing to split")
    answers.prepare({**sets, **({"xstest": xs} if xs else {})})
    say(f"eval compare: shard {shard.index}/{shard.count} answered in {output}/responses; when every shard is done, "
        f"join each NAME.SET.*-of-{shard.count}.jsonl with caikit merge into NAME.SET.jsonl and rerun without --shard, with --resume")


def once_per_spec(engine):
    """`engine.build`, loading each model spec once: a model that both answers and judges (the
    quickstart's base model) is loaded once."""
    from caikit.backends import for_scoring

    built: dict = {}

    def build(spec: str, scoring: bool = False):
        if spec not in built:
            built[spec] = engine.build(spec)
        return for_scoring(built[spec]) if scoring else built[spec]

    return build


@command("compare", group=eval_app)
@with_options(engine)
def eval_compare(
    output: Annotated[Path, typer.Option("-o", "--output", help="Report dir: report.md, results.json, plots, judgments.")],
    model: Annotated[Optional[list[str]], typer.Option("--model", help="NAME=SPEC[@TEMPERATURE], repeatable: models to generate with.")] = None,
    responses: Annotated[Optional[list[str]], typer.Option("--responses", help="NAME=FILE, repeatable: existing redteam-format answers.")] = None,
    red_team: Annotated[Optional[str], typer.Option("--red-team", help="Red-team prompts: harmlessness ratings.")] = None,
    helpful: Annotated[Optional[str], typer.Option("--helpful", help="Helpful prompts: helpfulness ratings.")] = None,
    xstest: Annotated[Optional[str], typer.Option("--xstest", help="XSTest-style CSV (prompt,type,label): over-refusal.")] = None,
    pm: PmDir = None,
    feedback_model: Annotated[Optional[str], typer.Option("--feedback-model", "--judge", help=FEEDBACK_MODEL)] = None,
    check_human: CheckHuman = None,
    check_limit: CheckLimit = 200,
    revisions: Annotated[Optional[str], typer.Option("--revisions", help="revise --keep-all output: PM score by round.")] = None,
    hhh: Annotated[Optional[list[str]], typer.Option("--hhh", help="HHH comparisons (e.g. 438HHHEvaluations.jsonl): the PM's accuracy.")] = None,
    hhh_limit: Annotated[Optional[int], typer.Option("--hhh-limit", min=1, help="Use only the first N HHH comparisons.")] = None,
    snapshots: Annotated[bool, typer.Option("--snapshots", help="The models are snapshots of one run, in the order given: the frontier joins them (automatic for checkpoint-N dirs).")] = False,
    constitution: Constitution = "default",
    max_new_tokens: MaxNewTokens = 128,
    temperature: Temperature = 0.7,
    seed: Seed = 0,
    limit: Limit = None,
    shard: ShardOption = None,
    resume: Resume = False,
    json_out: Json = False,
    quiet: Quiet = False,
    engine: Engine = None,
):
    """Compare models: harmlessness and helpfulness Elo from AI judgments, over-refusal, absolute harm.

    Example: caikit eval compare --model base=smollm2-135m-instruct --model sl=runs/sl-cai
      --red-team examples/prompts/redteam.jsonl --helpful examples/prompts/helpful.jsonl
      --xstest ../shared/data/xstest/xstest_prompts.csv --feedback-model smollm2-135m-instruct --pm runs/pm -o runs/eval
    """
    from caikit import calibration, compare, console, constitution as constitutions, evals, inputs
    from caikit.preference_model import PreferenceModel

    console.setup_logging(quiet)
    specs, files = named(model, "--model"), named(responses, "--responses")
    names = compare.check(specs, files, red_team=red_team, helpful=helpful, pm=pm, judge=feedback_model, hhh=hhh, check_human=check_human)
    sets, xs = compare.read_sets(red_team, helpful, xstest, limit)  # all data is read before any model is loaded
    const = constitutions.load(constitution)
    rows = inputs.read_completions(revisions) if revisions else None
    hhh_items = evals.load_items(hhh, hhh_limit) if hhh else None
    human_pairs = calibration.human_pairs([check_human], check_limit, seed) if check_human else None
    generated = compare.answering(specs, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed))
    build = once_per_spec(engine)
    answers = compare.Answers(output, given=files, models=generated, build=build, resume=resume,
                              progress=console.progress_factory(quiet), shard=shard)
    if shard is not None:
        answer_shard(answers, generated, sets, xs, shard, output)
        return
    preference = PreferenceModel(pm, device=engine.device, dtype=engine.dtype, batch_size=engine.batch_size) if pm else None
    judging = build(feedback_model, scoring=True) if feedback_model else None
    human = judge_against_humans(judging, const, human_pairs, seed, quiet) if check_human and judging else None
    results = compare.run(output, answers, names, sets, xs, pm=preference, judge=judging, const=const, revisions=rows, hhh=hhh_items,
                          seed=seed, resume=resume, human=human, human_pairs=human_pairs, snapshots=snapshots or compare.checkpoints(specs))
    if json_out:
        typer.echo(json.dumps(results))
    if not quiet:
        print_compare(results, output)


def print_compare(results: dict, output: Path) -> None:
    from rich.table import Table

    from caikit import console
    from caikit.report import verdict

    for kind, sources in results["elo"].items():
        for source, table in sources.items():
            shown = Table("model", "Elo", "95% CI", title=f"{kind} ({source}), n={table['prompts']} prompts")
            for name, row in table["models"].items():
                shown.add_row(name, f"{row['elo']:.0f}", f"{row['ci95'][0]:.0f}-{row['ci95'][1]:.0f}")
            console.stderr().print(shown)
    console.say(f"eval compare: report in {output / 'report.md'} and report.html")
    console.say(verdict(results))


@command("labeler", group=eval_app)
@with_options(engine, sampling)
def eval_labeler(
    input: Annotated[list[str], typer.Option("-i", "--input", "--data", help="Human-labelled pairs (hh-rlhf, 438 HHH, BIG-bench JSON, {prompt, chosen, rejected}); repeatable.")],
    feedback_model: Annotated[str, typer.Option("--feedback-model", "--model", help=FEEDBACK_MODEL)] = "smollm2-135m-instruct",
    modes: Annotated[str, typer.Option("--modes", help=f"Labeling modes to compare: {MODE_HELP}.")] = "single,debiased,ensemble-4",
    kind: Kind = "harmlessness",
    clamp: Clamp = "0.4,0.6",
    constitution: Constitution = "default",
    limit: Limit = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Dir for results.json, reliability.png and each mode's labels.")] = None,
    json_out: Json = False,
    quiet: Quiet = False,
    engine: Engine = None,
    sampling: SamplingParams = None,
):
    """How often the feedback model agrees with human preference judgments, per labeling mode.

    Example: caikit eval labeler -i ../shared/data/hh-rlhf/harmless-base_test.jsonl.gz --limit 200
      --modes single,debiased,ensemble-4 --feedback-model openai:Qwen/Qwen2.5-7B-Instruct@http://gpu01:8000/v1
    """
    from caikit import calibration as stage, console, constitution as constitutions
    from caikit.label import cot_sampling

    console.setup_logging(quiet)
    chosen_modes, lo_hi = stage.parse_modes(modes), clamp_range(clamp)
    const = constitutions.load(constitution)
    comparisons = const.comparisons_for(kind)
    pairs = stage.human_pairs(input, limit, sampling.seed)  # all data is read before the model is loaded
    backend = engine.build(feedback_model, scoring=True)
    results, runs = stage.run(backend, const, comparisons, pairs, chosen_modes, seed=sampling.seed, clamp=lo_hi,
                              cot_params=cot_sampling(sampling), progress=console.progress_factory(quiet))
    results.update(feedback_model=feedback_model, backend=backend.name, **getattr(backend, "details", {}), data=input,
                   constitution=const.provenance())
    if output is not None:
        stage.save(output, results, runs)
    if json_out:
        typer.echo(json.dumps(results))
    if not quiet:
        print_labeler(results, feedback_model)


def print_labeler(results: dict, feedback_model: str) -> None:
    from caikit import console

    rows = [[name, str(m["n"]), f"{m['agreement']:.3f}", f"{m['ci95'][0]:.3f}-{m['ci95'][1]:.3f}", f"{m['position_bias']:+.3f}",
             f"{m['confidence']:.3f}", f"{m['ece']:.3f}", f"{m['seconds_per_label']:.2f}", f"{m['tokens_per_label']:.0f}"]
            for name, m in results["modes"].items()]
    print_table(f"caikit eval labeler: {feedback_model} vs human choices",
                ["mode", "n", "agree", "95% CI", "A bias", "conf", "ECE", "s/lab", "tok/lab"], rows)
    print_table("agreement by principle", ["principle", "n", "agreement", "95% CI"],
                [[pid, str(v["n"]), f"{v['agreement']:.3f}", f"{v['ci95'][0]:.3f}-{v['ci95'][1]:.3f}"] for pid, v in results["principles"].items()])
    console.say(results["verdict"])


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    from caikit.console import stderr

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    stderr().print(table)


@command("mc", group=eval_app)
@with_options(engine)
def eval_mc(
    input: EvalData,
    model: Annotated[Optional[str], typer.Option("--model", help=SPEC_HELP)] = None,
    pm: PmDir = None,
    raw: Annotated[bool, typer.Option("--raw", help="Score the prompt as raw text instead of a chat turn.")] = False,
    seed: Seed = 0,
    limit: Limit = None,
    json_out: Json = False,
    quiet: Quiet = False,
    engine: Engine = None,
):
    """Multiple-choice accuracy of a model (or a PM) on HHH-style evals, per subset with 95% CIs.

    The model (default smollm2-135m-instruct) answers by the log-probs of each option; with --pm, the
    preference model scores each option's response instead. --seed shuffles BIG-bench options (the
    correct one is often listed first).

    Example: caikit eval mc -i ../shared/data/anthropic-cai/evals/438HHHEvaluations.jsonl --json
    """
    from caikit import console, evals
    from caikit.models import DEFAULT_MODEL

    console.setup_logging(quiet)
    if model and pm:
        raise CaikitError("--model or --pm: give one, not both")
    if pm:
        from caikit.preference_model import PreferenceModel

        sum(1 for _ in evals.iter_items(input, limit))  # the data is checked (read once) before a model is loaded
        scorer = PreferenceModel(pm, device=engine.device, dtype=engine.dtype, batch_size=engine.batch_size)
        results = evals.pm_accuracy(scorer, evals.iter_items(input, limit))
    else:
        items = first(evals.mc_items(input, seed), limit)
        results = evals.mc_accuracy(engine.build(model or DEFAULT_MODEL, scoring=True), items, raw=raw)
    if json_out:
        typer.echo(json.dumps(results))
    if not quiet:
        print_accuracy_table(f"caikit eval mc: {pm or model or DEFAULT_MODEL}", results)


@command("pm", group=eval_app)
def eval_pm(
    input: EvalData,
    pm: Annotated[Path, typer.Option("--pm", help="Preference-model dir (from caikit train-pm).")],
    batch_size: BatchSize = 16,
    dtype: Dtype = "auto",
    device: Device = "auto",
    limit: Limit = None,
    allow_pickle: AllowPickle = False,
    json_out: Json = False,
    quiet: Quiet = False,
):
    """Accuracy of a preference model on HHH-style comparisons, with 95% intervals and per-subset rows.

    Example: caikit eval pm --pm runs/pm -i ../shared/data/anthropic-cai/evals/438HHHEvaluations.jsonl --json
    """
    from caikit import console, evals
    from caikit.preference_model import PreferenceModel

    console.setup_logging(quiet)
    sum(1 for _ in evals.iter_items(input, limit))  # the data is checked (read once) before a model is loaded
    scorer = PreferenceModel(pm, device=device, dtype=dtype, batch_size=batch_size)
    results = {"pm": str(pm), "data": input, **evals.pm_accuracy(scorer, evals.iter_items(input, limit))}
    if json_out:
        typer.echo(json.dumps(results))
    if not quiet:
        print_accuracy_table(f"caikit eval pm: {pm}", results)
