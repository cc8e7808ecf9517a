"""`caikit inspect`: an ad hoc look at any caikit JSONL file (or any JSONL of records).

Summary: record count, stages, fields, length statistics of prompts and responses, the principle
histogram (revise and label), the label-confidence histogram (label), and provenance (models,
backends, seeds, constitution hashes, versions). `--show N` prints records readably; `--where`
filters with `path=value`, `path!=value`, `path>number`, `path<number` or `path~text` on dotted
paths (`caikit.stage=revise`, `label>0.8`, `prompt.0.content~lock`).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter

from caikit.errors import CaikitError

_FILTER = re.compile(r"^([\w.\-]+)\s*(!=|=|>|<|~)\s*(.*)$")


def lookup(record, path: str):
    value = record
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def parse_filter(text: str):
    match = _FILTER.match(text.strip())
    if not match:
        raise CaikitError(f"--where {text}: expected PATH=VALUE, PATH!=VALUE, PATH>N, PATH<N or PATH~TEXT")
    path, op, wanted = match.groups()
    if op in "<>":
        try:
            number = float(wanted)
        except ValueError:
            raise CaikitError(f"--where {text}: '{wanted}' is not a number") from None

    def keep(record) -> bool:
        value = lookup(record, path)
        if op in "<>":
            return isinstance(value, (int, float)) and not isinstance(value, bool) and (value > number if op == ">" else value < number)
        shown = value if isinstance(value, str) else ("" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
        if op == "~":
            return wanted.lower() in shown.lower()
        return (shown == wanted) == (op == "=")

    return keep


def text_of(messages) -> str:
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        return "\n".join(m.get("content", "") for m in messages if isinstance(m, dict))
    return ""


def length_stats(values: list[int]) -> dict | None:
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 1), "median": statistics.median(values), "max": max(values), "min": min(values)}


def summarize(records: list[dict]) -> dict:
    stages = Counter(lookup(r, "caikit.stage") or "(none)" for r in records)
    fields = Counter(k for r in records for k in r)
    lengths = {}
    for key in ("prompt", "completion", "initial", "chosen", "rejected"):
        stats = length_stats([len(text_of(r[key])) for r in records if key in r])
        if stats:
            lengths[key] = stats
    principles = Counter()
    for r in records:
        for pid in lookup(r, "caikit.principle_ids") or []:
            principles[pid] += 1
    confidence = Counter()
    labels = [r["label"] for r in records if isinstance(r.get("label"), (int, float))]
    for value in labels:
        low = min(int(value * 10), 9) / 10
        confidence[f"{low:.1f}-{low + 0.1:.1f}"] += 1
    failed = sum(1 for r in records for s in r.get("revisions", []) if isinstance(s, dict) and s.get("failed"))
    provenance = {}
    for key in ("model", "backend", "seed", "version", "constitution.hash"):
        found = Counter(str(lookup(r, f"caikit.{key}")) for r in records if lookup(r, f"caikit.{key}") is not None)
        if found:
            provenance[key] = dict(found.most_common())
    summary = {
        "records": len(records),
        "stages": dict(stages.most_common()),
        "fields": dict(fields.most_common()),
        "lengths_chars": lengths,
        "principles": dict(principles.most_common()),
        "label_histogram": dict(sorted(confidence.items())),
        "provenance": provenance,
    }
    if labels:
        summary["mean_label"] = statistics.fmean(labels)
    if any("revisions" in r for r in records):
        summary["failed_revision_rounds"] = failed
    return summary


def render_summary(console, path: str, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"caikit inspect {path}", show_header=False)
    table.add_row("records", str(summary["records"]))
    table.add_row("stages", ", ".join(f"{k} ({v})" for k, v in summary["stages"].items()))
    table.add_row("fields", ", ".join(f"{k} ({v})" for k, v in summary["fields"].items()))
    for key, stats in summary["lengths_chars"].items():
        table.add_row(f"{key} length (chars)", f"mean {stats['mean']}, median {stats['median']}, min {stats['min']}, max {stats['max']}")
    if "failed_revision_rounds" in summary:
        table.add_row("failed revision rounds", str(summary["failed_revision_rounds"]))
    if "mean_label" in summary:
        table.add_row("mean label", f"{summary['mean_label']:.3f}")
    for key, values in summary["provenance"].items():
        table.add_row(f"provenance: {key}", ", ".join(f"{k} ({v})" for k, v in values.items()))
    console.print(table)
    for title, counts in (("principles", summary["principles"]), ("label confidence", summary["label_histogram"])):
        if counts:
            hist = Table("bin", "count", "", title=title)
            top = max(counts.values())
            for name, count in counts.items():
                hist.add_row(name, str(count), "█" * max(1, round(30 * count / top)))
            console.print(hist)


def render_record(console, record: dict, number: int) -> None:
    from rich.panel import Panel

    parts = []
    for message in record.get("prompt") or []:
        if isinstance(message, dict):
            parts.append(f"[bold]{message.get('role')}:[/bold] {escape(message.get('content', ''))}")
    if record.get("initial"):
        parts.append(f"[bold]initial:[/bold] {escape(text_of(record['initial']))}")
    for step in record.get("revisions") or []:
        head = f"[bold]round {step.get('round')} ({step.get('principle_id')})[/bold]"
        if step.get("critique"):
            parts.append(f"{head} critique: {escape(step['critique'])}")
        parts.append(f"{head} revision{' (failed)' if step.get('failed') else ''}: {escape(step.get('revision', ''))}")
    if record.get("completion"):
        parts.append(f"[bold green]completion:[/bold green] {escape(text_of(record['completion']))}")
    if record.get("chosen"):
        parts.append(f"[bold green]chosen:[/bold green] {escape(text_of(record['chosen']))}")
        parts.append(f"[bold red]rejected:[/bold red] {escape(text_of(record['rejected']))}")
    if "label" in record:
        principles = ", ".join(str(p.get("id")) for p in record.get("principles", []) if isinstance(p, dict))
        parts.append(f"[bold]label:[/bold] {record['label']:.3f}  principles: {principles}")
    stage = lookup(record, "caikit.stage") or "?"
    console.print(Panel("\n".join(parts) or escape(str(record)), title=escape(f"#{number} {record.get('id', '')} [{stage}]")))


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
