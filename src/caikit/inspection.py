"""`caikit inspect`: an ad hoc look at any caikit JSONL file (or any JSONL of records).

Summary: record count, stages, fields, length statistics of prompts and responses, the principle
histogram (revise and label), the label-confidence histogram (label), and provenance (models,
backends, seeds, constitution hashes, versions). `--show N` prints records readably; `--where`
filters with `path=value`, `path!=value`, `path>number`, `path<number` or `path~text` on dotted
paths (`caikit.stage=revise`, `label>0.8`, `prompt.0.content~lock`).
"""

from __future__ import annotations

import re
from array import array
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


LENGTH_KEYS = ("prompt", "completion", "initial", "chosen", "rejected")
PROVENANCE_KEYS = ("model", "backend", "seed", "version", "constitution.hash")
MAX_VALUES = 1000  # distinct values counted per provenance key; past it they are counted as "(other)"


def length_stats(values) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {"mean": round(sum(ordered) / n, 1), "median": median, "max": ordered[-1], "min": ordered[0]}


class Summary:
    """The summary of records seen one at a time: memory holds counts and, per length key, one
    4-byte integer per record (an `array`, so medians are exact: 4 MB per million records)."""

    def __init__(self):
        self.records = 0
        self.stages, self.fields, self.principles, self.confidence = Counter(), Counter(), Counter(), Counter()
        self.lengths = {key: array("I") for key in LENGTH_KEYS}
        self.provenance = {key: Counter() for key in PROVENANCE_KEYS}
        self.label_sum, self.labels, self.failed, self.revised = 0.0, 0, 0, False

    def add(self, r: dict) -> None:
        self.records += 1
        self.stages[lookup(r, "caikit.stage") or "(none)"] += 1
        self.fields.update(r.keys())
        for key in LENGTH_KEYS:
            if key in r:
                self.lengths[key].append(min(len(text_of(r[key])), 2**32 - 1))
        for pid in lookup(r, "caikit.principle_ids") or []:
            self.principles[pid] += 1
        value = r.get("label")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low = min(max(int(value * 10), 0), 9) / 10
            self.confidence[f"{low:.1f}-{low + 0.1:.1f}"] += 1
            self.label_sum += value
            self.labels += 1
        if "revisions" in r:
            self.revised = True
            self.failed += sum(1 for step in r["revisions"] if isinstance(step, dict) and step.get("failed"))
        for key, found in self.provenance.items():
            value = lookup(r, f"caikit.{key}")
            if value is not None:
                value = str(value)
                found[value if value in found or len(found) < MAX_VALUES else "(other)"] += 1

    def result(self) -> dict:
        summary = {
            "records": self.records,
            "stages": dict(self.stages.most_common()),
            "fields": dict(self.fields.most_common()),
            "lengths_chars": {key: length_stats(values) for key, values in self.lengths.items() if values},
            "principles": dict(self.principles.most_common()),
            "label_histogram": dict(sorted(self.confidence.items())),
            "provenance": {key: dict(found.most_common()) for key, found in self.provenance.items() if found},
        }
        if self.labels:
            summary["mean_label"] = self.label_sum / self.labels
        if self.revised:
            summary["failed_revision_rounds"] = self.failed
        return summary


def summarize(records) -> dict:
    """The summary of an iterable of records, read once."""
    summary = Summary()
    for record in records:
        summary.add(record)
    return summary.result()


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
