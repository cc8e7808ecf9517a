"""Commands over record files of any stage: `inspect` (summarize, filter, pretty-print) and `merge`
(join the outputs of sharded runs)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from caikit.cli.app import command
from caikit.cli.options import Output, Quiet, destination


@command()
def inspect(
    input: Annotated[str, typer.Argument(help="A caikit JSONL file (or any JSONL of records); - reads stdin.")] = "-",
    show: Annotated[int, typer.Option("--show", min=0, help="Pretty-print the first N (filtered) records.")] = 0,
    where: Annotated[Optional[list[str]], typer.Option("--where", help="Filter: PATH=V, PATH!=V, PATH>N, PATH<N, PATH~TEXT (repeatable, ANDed).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
):
    """Summarize a caikit JSONL file: stages, fields, lengths, principles, labels, provenance.

    Examples: caikit inspect runs/quickstart/sl.jsonl --show 2
              caikit inspect runs/quickstart/labels.jsonl --where "label>0.7" --json
    """
    from rich.console import Console

    from caikit import inspection, reading

    keep = [inspection.parse_filter(w) for w in where or []]
    summary, shown = inspection.Summary(), []  # one pass; only the records to show are kept
    for _, row in reading.read_jsonl(input):
        if all(k(row) for k in keep):
            summary.add(row)
            if len(shown) < show:
                shown.append(row)
    if json_out:
        typer.echo(json.dumps(summary.result()))
        return
    console = Console()
    inspection.render_summary(console, input, summary.result())
    for number, record in enumerate(shown, start=1):
        inspection.render_record(console, record, number)


@command()
def merge(
    files: Annotated[list[str], typer.Argument(help="JSONL outputs of sharded runs (any caikit stage).")],
    output: Output = "-",
    quiet: Quiet = False,
):
    """Join the outputs of `--shard I/N` runs: one record per id, in input order, with warnings for
    missing shards, conflicting copies and differing settings.

    Example: caikit merge runs/redteam.*-of-8.jsonl -o runs/redteam.jsonl
    """
    from caikit import console, merge as stage
    from caikit.outputs import JsonlWriter

    console.setup_logging(quiet, libraries=False)
    with JsonlWriter(output) as out:  # (to FILE.partial, renamed when whole: -o may be one of the inputs)
        counts = stage.merge(files, out.write)
    if not quiet:
        console.say(f"merge: {counts['read']} records from {len(files)} files -> {out.count} in {destination(output)} "
                    f"({counts['duplicates']} duplicates dropped, {counts['conflicts']} of them conflicting)")
