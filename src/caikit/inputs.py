"""Reading prompts from the files people have: JSONL, CSV, plain text and hh-rlhf transcripts.

Every reader returns a list of `{"id", "prompt": [messages...], ...extra fields}` records, one per
distinct prompt. Problems are reported as `FILE:LINE: reason` (a CaikitError), before any output
is written.

Formats (`auto` picks by extension; stdin is sniffed: `{` means JSONL, anything else text):
- jsonl: `{"prompt": "..."}`, `{"prompt": [messages]}`, `{"messages": [messages]}`, or an hh-rlhf
  record `{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ..."}`; a `prompt` string written as a
  transcript is read as one too. `.gz` files are read transparently.
- csv: one prompt per row, in the column `--prompt-field` (default `prompt`).
- txt: one prompt per non-blank line.
- hh: JSONL whose `prompt`, `chosen` or `text` field must be an hh-rlhf transcript.
A transcript gives its first human turn, or with `keep_history` the whole conversation up to and
including the last human turn.
"""

from __future__ import annotations

import csv
import itertools
import logging
import re
from pathlib import Path

from caikit.errors import CaikitError, located
from caikit.reading import jsonl_rows, read_jsonl, text_lines
from caikit.records import pair_id, prompt_id

FORMATS = ("auto", "jsonl", "csv", "txt", "hh")
ROLES = ("system", "user", "assistant")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt"}
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
# Fields of an input record that describe the prompt or an earlier stage; the rest pass through.
_CONSUMED = {"id", "prompt", "messages", "chosen", "rejected", "text", "completion", "caikit"}

log = logging.getLogger(__name__)


def detect_format(path: str, text: str, fmt: str) -> str:
    if fmt not in FORMATS:
        raise CaikitError(f"--format {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if path == "-":
        return "jsonl" if text.lstrip().startswith("{") else "txt"
    suffix = Path(path.removesuffix(".gz")).suffix.lower()
    if suffix not in _SUFFIXES:
        raise CaikitError(f"{path}: cannot tell the format from the extension; pass --format jsonl, csv, txt or hh")
    return _SUFFIXES[suffix]


def parse_transcript(text: str, keep_history: bool = False) -> list[dict] | None:
    """An hh-rlhf transcript as messages: its first human turn, or all turns up to the last human one."""
    parts = _TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        return None
    turns = [
        {"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2])
    ]
    users = [k for k, t in enumerate(turns) if t["role"] == "user"]
    if not users or not turns[users[0]]["content"]:
        return None
    return turns[: users[-1] + 1] if keep_history else [turns[users[0]]]


def looks_like_transcript(text: str) -> bool:
    return text.lstrip("\n").startswith("Human:") and "\n\nAssistant:" in text


def check_messages(messages, where: tuple[str, int], key: str = "messages") -> list[dict]:
    """Validate a conversation. A `prompt` must end with the user's turn; a whole chat (`messages`,
    `chosen`) is answered after its last user turn (its trailing assistant turns are dropped)."""
    if not isinstance(messages, list) or not messages:
        raise located(*where, "a conversation must be a non-empty list of {role, content} messages")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise located(*where, f"message {k} must be {{\"role\": system|user|assistant, \"content\": string}}")
    if key == "prompt" and messages[-1]["role"] != "user":
        raise located(*where, f"'prompt' ends with the {messages[-1]['role']}'s turn; a prompt ends with the user's turn "
                      "(a whole chat goes in 'messages' and is answered after its last user turn)")
    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not any(m["role"] == "user" for m in messages) or not messages[-1]["content"].strip():
        raise located(*where, "the conversation has no user turn to answer")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def prompt_of(row: dict, where: tuple[str, int], *, hh: bool = False, keep_history: bool = False) -> list[dict]:
    """The prompt conversation of one JSONL record."""
    for key in ("prompt", "chosen", "text") if hh else ("prompt", "messages", "chosen"):
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            return check_messages(value, where, key)
        if not isinstance(value, str):
            raise located(*where, f"'{key}' must be a string or a list of messages")
        if hh or key == "chosen" or looks_like_transcript(value):
            messages = parse_transcript(value, keep_history)
            if messages is None:
                raise located(*where, f"'{key}' is not an hh-rlhf transcript (\"\\n\\nHuman: ...\\n\\nAssistant: ...\")")
            return messages
        if not value.strip():
            raise located(*where, f"'{key}' is empty")
        return [{"role": "user", "content": value.strip()}]
    wanted = "'prompt', 'chosen' or 'text' transcript" if hh else "'prompt' string or conversation, 'messages', or an hh-rlhf 'chosen'"
    raise located(*where, f"no usable prompt: expected a {wanted} field")


def read_prompts(path: str, fmt: str = "auto", *, prompt_field: str = "prompt", keep_history: bool = False) -> list[dict]:
    """Distinct prompts of a file (or `-`) as `{"id", "prompt", ...}` records, in file order."""
    return list(iter_prompts(path, fmt, prompt_field=prompt_field, keep_history=keep_history))


def iter_prompts(path: str, fmt: str = "auto", *, prompt_field: str = "prompt", keep_history: bool = False):
    """read_prompts one record at a time: memory holds the ids seen (to drop repeats), not the records."""
    if fmt not in FORMATS:
        raise CaikitError(f"--format {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
    lines = text_lines(path)
    sniffed = ""
    if fmt == "auto" and path == "-":  # stdin: look at its first non-blank line
        ahead = []
        for number, line in lines:
            ahead.append((number, line))
            if line.strip():
                sniffed = line
                break
        lines = itertools.chain(ahead, lines)
    fmt = detect_format(path, sniffed, fmt)
    seen: set[str] = set()

    def new(record: dict) -> bool:
        fresh = record["id"] not in seen
        seen.add(record["id"])
        return fresh

    if fmt in ("jsonl", "hh"):
        for number, row in jsonl_rows(path, lines):
            prompt = prompt_of(row, (path, number), hh=fmt == "hh", keep_history=keep_history)
            extra = {k: v for k, v in row.items() if k not in _CONSUMED}
            record = {"id": prompt_id(prompt), "prompt": prompt, **extra}
            if new(record):
                yield record
    elif fmt == "csv":
        reader = csv.DictReader(line for _, line in lines)
        if reader.fieldnames is None:
            raise CaikitError(f"{path}: no records (the input is empty)")
        if prompt_field not in reader.fieldnames:
            columns = ", ".join(reader.fieldnames)
            raise located(path, 1, f"no column '{prompt_field}' (columns: {columns}); choose one with --prompt-field")
        for row in reader:
            value = (row.get(prompt_field) or "").strip()
            if not value:
                raise located(path, reader.line_num, f"empty '{prompt_field}' cell")
            prompt = [{"role": "user", "content": value}]
            extra = {k: v for k, v in row.items() if k != prompt_field and k is not None and k not in _CONSUMED}
            record = {"id": prompt_id(prompt), "prompt": prompt, **extra}
            if new(record):
                yield record
    else:
        for _, line in lines:
            if line.strip():
                prompt = [{"role": "user", "content": line.strip()}]
                record = {"id": prompt_id(prompt), "prompt": prompt}
                if new(record):
                    yield record
    if not seen:
        raise CaikitError(f"{'<stdin>' if path == '-' else path}: no prompts found (the input is empty)")


def read_completions(path: str) -> list[dict]:
    """Records with a prompt and a completion (e.g. `redteam` output), validated, in file order."""
    return list(iter_completions(path))


def iter_completions(path: str):
    """read_completions one record at a time: memory holds the ids seen, not the records."""
    first_line: dict[str, int] = {}
    for number, row in read_jsonl(path):
        where = (path, number)
        if "prompt" not in row or "completion" not in row:
            raise located(*where, "not a prompt-completion record (like redteam output): needs 'prompt' and 'completion'")
        prompt = prompt_of({"prompt": row["prompt"]}, where)
        completion = row["completion"]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        if (
            not isinstance(completion, list)
            or not completion
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in completion)
            or completion[-1]["role"] != "assistant"
        ):
            raise located(*where, "'completion' must be a string or a list of {role, content} messages ending with the assistant's")
        if not completion[-1]["content"].strip():
            raise located(*where, "the completion is empty")
        rid = row.get("id") if isinstance(row.get("id"), str) and row.get("id") else prompt_id(prompt)
        if rid in first_line:
            raise located(*where, f"duplicate id {rid} (first on line {first_line[rid]})")
        first_line[rid] = number
        yield {**row, "id": rid, "prompt": prompt, "completion": completion}


def split_transcript(text: str) -> tuple[list[dict], str] | None:
    """An hh-rlhf transcript as (conversation up to the last human turn, final assistant reply)."""
    turns = parse_transcript(text, keep_history=True)
    parts = _TURN.split(text)
    if not turns or len(parts) < 5 or parts[-2] != "Assistant":
        return None
    return turns, parts[-1].strip()


def _response(value, where, key) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and value and isinstance(value[-1], dict) and isinstance(value[-1].get("content"), str):
        return value[-1]["content"].strip()
    raise located(*where, f"'{key}' must be a string or a list ending with an assistant message")


def pair_of(row: dict, where: tuple) -> tuple[list[dict], str, str, tuple[str, str]]:
    """(prompt, first response, second response, the two keys) of a pair record in any accepted shape:
    `{prompt, completion_a, completion_b}`, `{prompt, chosen, rejected}`, hh-rlhf `{chosen, rejected}`
    transcripts, or the paper's HHH rows `{text_correct, text_incorrect}`."""
    for keys in (("completion_a", "completion_b"), ("chosen", "rejected"), ("text_correct", "text_incorrect")):
        if keys[0] in row and keys[1] in row:
            break
    else:
        raise located(*where, "not a pair: needs 'completion_a'/'completion_b' or 'chosen'/'rejected'")
    if keys[0] == "text_correct" or ("prompt" not in row and all(isinstance(row[k], str) and looks_like_transcript(row[k]) for k in keys)):
        first, second = split_transcript(row[keys[0]]), split_transcript(row[keys[1]])
        if first is None or second is None:
            raise located(*where, "hh-rlhf transcripts must end with an Assistant turn")
        return first[0], first[1], second[1], keys
    if "prompt" not in row:
        raise located(*where, "no 'prompt' (and the responses are not hh-rlhf transcripts)")
    prompt = prompt_of({"prompt": row["prompt"]}, where)
    return prompt, _response(row[keys[0]], where, keys[0]), _response(row[keys[1]], where, keys[1]), keys


def read_pairs(path: str) -> tuple[list[dict], dict]:
    """Pairs to label, `{"id", "prompt", "a", "b", ...}` (a = chosen when relabelling), from any shape
    `pair_of` accepts. Pairs with an empty or identical response are skipped and counted."""
    skipped = {"identical": 0, "empty": 0}
    return list(iter_pairs(path, skipped)), skipped


def iter_pairs(path: str, skipped: dict):
    """read_pairs one pair at a time; the skipped ones are counted in `skipped`."""
    for reason in ("identical", "empty"):
        skipped.setdefault(reason, 0)
    for number, row in read_jsonl(path):
        prompt, a, b, keys = pair_of(row, (path, number))
        if not a or not b:
            skipped["empty"] += 1
            continue
        if a == b:
            skipped["identical"] += 1
            continue
        extra = {k: v for k, v in row.items() if k not in (*keys, "prompt", "id", "caikit", "label", "principles", "p_a")}
        yield {"id": pair_id(prompt, a, b), "prompt": prompt, "a": a, "b": b, **extra}


def read_preferences(path: str) -> list[dict]:
    """Preference examples `{"prompt", "chosen", "rejected", "label", "subset"?}` for a preference model.
    `label` is p(chosen better): a record's soft `label` (label output) or 1.0 for human pairs. Pairs
    with an empty response are skipped (and counted in a warning)."""
    return list(iter_preferences(path))


def iter_preferences(path: str):
    """read_preferences one example at a time."""
    empty = 0
    for number, row in read_jsonl(path):
        where = (path, number)
        prompt, chosen, rejected, _ = pair_of(row, where)
        if not chosen or not rejected:  # hh-rlhf has a few: nothing to compare
            empty += 1
            continue
        label = row.get("label", 1.0)
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not 0 <= label <= 1:
            raise located(*where, f"label {label!r} is not a probability in [0, 1]")
        example = {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "label": float(label),
        }
        subset = row.get("subset", row.get("category"))
        if isinstance(subset, str):
            example["subset"] = subset
        yield example
    if empty:
        log.warning("%s: skipped %d pairs with an empty response", path, empty)
