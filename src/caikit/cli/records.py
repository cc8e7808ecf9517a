"""Commands over record files of any stage: `inspect` (summarize, filter, pretty-print), `merge`
(join the outputs of sharded runs) and `view` (browse them, label pairs by hand)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from caikit.cli.app import command
from caikit.cli.options import Host, Output, Port, Quiet, Seed, Where, destination
from caikit.errors import CaikitError


@command()
def inspect(
    input: Annotated[str, typer.Argument(help="A caikit JSONL file (or any JSONL of records); - reads stdin.")] = "-",
    show: Annotated[int, typer.Option("--show", min=0, help="Pretty-print the first N (filtered) records.")] = 0,
    where: Where = None,
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


@command()
def view(
    paths: Annotated[Optional[list[str]], typer.Argument(help="JSONL files of any stage (.gz too), report.md, or run directories such as runs/quickstart/.")] = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    where: Where = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the records as one self-contained HTML page (no script, nothing fetched) and exit.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="With --export: at most N records per file.")] = 1000,
    annotate: Annotated[Optional[str], typer.Option("--annotate", help="Label this pair file by hand (label output, hh-rlhf, {prompt, chosen, rejected}).")] = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="With --annotate: the JSONL file of human labels (appended; resumes after its ids).")] = None,
    annotator: Annotated[str, typer.Option("--annotator", help="With --annotate: your name, written with each label.")] = os.environ.get("USER", "anonymous"),
    seed: Seed = 0,
):
    """Look at records in the browser: one view per stage (revisions with word diffs, pairs side by
    side with their probabilities, eval judgments with both answers), filters with --where's syntax,
    facets and paging; a file of any size opens at once (an index of byte offsets, not the records).
    With --annotate, label pairs yourself (keys a / b / t); the labels feed eval labeler, label
    --check-human and train-pm. Binds 127.0.0.1 unless --host says otherwise.

    Examples: caikit view runs/quickstart/
              caikit view runs/quickstart/labels.jsonl --where "label>0.9" --export confident.html
              caikit view --annotate runs/quickstart/labels.jsonl -o human.jsonl --annotator ana
    """
    from caikit import console, serving, viewer

    if export is not None and annotate is not None:
        raise CaikitError("--export and --annotate: give one of them")
    if (output is None) != (annotate is None):
        raise CaikitError("--annotate PAIRS and -o FILE go together (the pairs to label, the file the labels go to)")
    if not paths and (annotate is None or export is not None):
        raise CaikitError("give the files or run directories to view (or --annotate PAIRS -o FILE)")
    app, url = viewer.build(paths or [], where=where or [], export=export, limit=limit, annotate=annotate, output=output,
                            annotator=annotator, seed=seed, host=host)
    if app is None:
        console.say(f"view: {url}")
        return
    listener = serving.bind(host, port)
    console.say(f"caikit view: http://{host}:{listener.getsockname()[1]}{url}  (Ctrl-C stops)")
    serving.serve_plain(app, listener)
