"""What a record shows, by its shape: a plain dict of texts and numbers for the templates (which
escape every text they print).

- redteam: the conversation and its answer;
- revise: the initial answer, then each round's principle, critique and revision, with a word-level
  diff against the text it revised;
- label (or any pair): the conversation, chosen and rejected side by side, the label, p(a), both
  orders' probabilities per principle, and the chain of thought where there is one;
- judgment (`eval compare`'s judgments.jsonl): two models' answers to one prompt side by side with
  the judge's probability, the answers looked up in the run's responses/;
- anything else: its JSON.
"""

from __future__ import annotations

import difflib
import json
import re

from caikit.inspection import lookup, text_of
from caikit.viewer.index import ERROR

_WORD = re.compile(r"\S+\s*|\s+")  # a word with the space after it
MAX_DIFF_WORDS = 4000  # past it a revision is shown whole: difflib is quadratic in the worst case


def word_diff(before: str, after: str) -> list[tuple[str, str]] | None:
    """(kind, text) pieces of `after` against `before`: kind is "same", "added" or "removed"."""
    old, new = _WORD.findall(before), _WORD.findall(after)
    if len(old) > MAX_DIFF_WORDS or len(new) > MAX_DIFF_WORDS:
        return None
    pieces = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append(("same", "".join(new[j1:j2])))
            continue
        if i2 > i1:
            pieces.append(("removed", "".join(old[i1:i2])))
        if j2 > j1:
            pieces.append(("added", "".join(new[j1:j2])))
    return pieces


def shape_of(record: dict) -> str:
    if ERROR in record:
        return "error"
    if "revisions" in record or "initial" in record:
        return "revise"
    if "p_first" in record and "first" in record and "second" in record:
        return "judgment"
    if ("chosen" in record and "rejected" in record) or ("completion_a" in record and "completion_b" in record):
        return "pair"
    if "completion" in record:
        return "answer"
    return "other"


def messages(value) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return [{"role": str(m.get("role", "?")), "content": str(m.get("content", ""))} for m in value if isinstance(m, dict)]
    return []


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def provenance(record: dict) -> list[tuple[str, str]]:
    info = record.get("caikit") if isinstance(record.get("caikit"), dict) else {}
    shown = []
    for key in ("stage", "model", "backend", "seed", "constitution.name", "constitution.hash", "version", "created"):
        value = lookup(info, key)
        if value is not None:
            shown.append((key, str(value)))
    return shown


def rounds(record: dict) -> list[dict]:
    previous = text_of(record.get("initial"))
    shown = []
    for step in record.get("revisions") or []:
        if not isinstance(step, dict):
            continue
        revision = str(step.get("revision", ""))
        shown.append({
            "round": step.get("round"), "principle": step.get("principle_id"), "critique": step.get("critique"),
            "revision": revision, "failed": bool(step.get("failed")), "diff": word_diff(previous, revision),
        })
        if not step.get("failed"):
            previous = revision
    return shown


def principles(record: dict) -> list[dict]:
    shown = []
    for p in record.get("principles") or []:
        if isinstance(p, dict):
            reasoning = p.get("reasoning")
            shown.append({
                "id": p.get("id"), "p_first_order": number(p.get("p_first_order")),
                "p_second_order": number(p.get("p_second_order")), "p": number(p.get("p")),
                "reasoning": [str(r) for r in reasoning] if isinstance(reasoning, list) else [str(reasoning)] if reasoning else [],
            })
    return shown


def view(record: dict, answers=None) -> dict:
    """The template's view of one record; `answers(name, set, prompt_id)` finds an eval answer."""
    kind = shape_of(record)
    shown = {"shape": kind, "id": record.get("id"), "stage": lookup(record, "caikit.stage"), "provenance": provenance(record),
             "json": json.dumps(record, ensure_ascii=False, indent=1)[:200_000]}
    if kind == "error":
        return {**shown, "error": record[ERROR]}
    shown["prompt"] = messages(record.get("prompt"))
    if kind == "revise":
        shown.update(initial=text_of(record.get("initial")), rounds=rounds(record), final=text_of(record.get("completion")))
    elif kind == "pair":
        keys = ("chosen", "rejected") if "chosen" in record else ("completion_a", "completion_b")
        shown.update(names=keys, left=text_of(record[keys[0]]), right=text_of(record[keys[1]]), label=number(record.get("label")),
                     p_a=number(record.get("p_a")), principles=principles(record))
    elif kind == "answer":
        shown["answer"] = text_of(record.get("completion"))
    elif kind == "judgment":
        found = [answers(record.get(side), record.get("set"), record.get("prompt_id")) if answers else None for side in ("first", "second")]
        prompt = next((f["prompt"] for f in found if f), [])
        shown.update(prompt=messages(prompt), names=(str(record.get("first")), str(record.get("second"))),
                     left=found[0]["answer"] if found[0] else None, right=found[1]["answer"] if found[1] else None,
                     p_first=number(record.get("p_first")), principle=record.get("principle_id"), judge=record.get("judge"),
                     set=record.get("set"), prompt_id=record.get("prompt_id"))
    return shown
