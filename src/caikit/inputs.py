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

import contextlib
import csv
import gzip
import itertools
import json
import logging
import re
import sys
from pathlib import Path

from caikit.errors import CaikitError, located
from caikit.records import pair_id, prompt_id

FORMATS = ("auto", "jsonl", "csv", "txt", "hh")
ROLES = ("system", "user", "assistant")
MAX_LINE = 16 << 20  # characters in one JSONL record: far beyond any model's context
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt"}
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
# Fields of an input record that describe the prompt or an earlier stage; the rest pass through.
_CONSUMED = {"id", "prompt", "messages", "chosen", "rejected", "text", "completion", "caikit"}

log = logging.getLogger(__name__)


def read_bytes(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CaikitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaikitError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise CaikitError(f"{path}: cannot read ({err.strerror})") from None
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise CaikitError(f"{path}: not a valid gzip file ({err})") from None
    return data


def decode(path: str, data: bytes) -> str:
    """UTF-8 text (a leading BOM is dropped); bad bytes are reported with their line number."""
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise located(path, line, "a NUL byte: this is a binary (or UTF-16) file, not UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise located(path, line, f"not valid UTF-8 (byte 0x{data[err.start]:02x}); convert the file to UTF-8") from None
    return text.removeprefix("\ufeff")


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


def open_binary(path: str):
    """A file (or stdin for `-`; `.gz` decompressed as it is read) opened for reading bytes."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    try:
        handle = Path(path).open("rb")
    except FileNotFoundError:
        raise CaikitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaikitError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise CaikitError(f"{path}: cannot read ({err.strerror})") from None
    return gzip.GzipFile(fileobj=handle, mode="rb") if path.endswith(".gz") else handle


def text_lines(path: str):
    """(line number, text) for each line of a file, read one line at a time: memory holds one line,
    whatever the file's size. Lines end at \n only (JSON strings may hold U+2028, U+0085 and the like,
    which str.splitlines() would split at) and keep it; a NUL byte, bad UTF-8 or a line over MAX_LINE
    is reported with its line number. The file is opened at once (a missing file fails here)."""
    return ((number, line) for number, line, _ in numbered_lines(path, open_binary(path)))


def numbered_lines(path: str, handle):
    """(line number, text, byte offset of the line) for each line read from a binary `handle`."""
    with handle as f:
        number, offset = 0, 0
        try:
            for number, raw in enumerate(f, start=1):
                at, offset = offset, offset + len(raw)
                if b"\x00" in raw:
                    raise located(path, number, "a NUL byte: this is a binary (or UTF-16) file, not UTF-8 text")
                if len(raw) > 4 * MAX_LINE:
                    raise located(path, number, f"a line of {len(raw) / 2**20:.0f} MB; one record may hold at most {MAX_LINE >> 20} MB")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise located(path, number, f"not valid UTF-8 (byte 0x{raw[err.start]:02x}); convert the file to UTF-8") from None
                yield number, line.removeprefix("\ufeff") if number == 1 else line, at
        except (OSError, EOFError) as err:  # a gzip stream that is corrupt or cut short
            if not path.endswith(".gz"):
                raise CaikitError(f"{path}:{number + 1}: cannot read ({err})") from None
            raise CaikitError(f"{path}: not a valid gzip file ({err})") from None


def jsonl_rows(path: str, lines):
    """(line number, object) for each non-blank line of (line number, text) pairs."""
    for number, line in lines:
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            raise located(path, number, f"a line of {len(line) / 2**20:.0f} MB; one record may hold at most {MAX_LINE >> 20} MB")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise located(path, number, f"invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise located(path, number, f"expected a JSON object, got {type(row).__name__}")
        yield number, row


def read_jsonl(path: str):
    """The records of a JSONL file (or `-`) with their line numbers, one at a time; a file with
    none is an error (raised when the reading reaches its end)."""
    found = False
    for number, row in jsonl_rows(path, text_lines(path)):
        found = True
        yield number, row
    if not found:
        raise CaikitError(f"{'<stdin>' if path == '-' else path}: no records (the input is empty)")


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


def read_prompts(
    path: str, fmt: str = "auto", *, prompt_field: str = "prompt", keep_history: bool = False
) -> list[dict]:
    """Distinct prompts of a file (or `-`) as `{"id", "prompt", ...}` records, in file order."""
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
    records = []
    if fmt in ("jsonl", "hh"):
        for number, row in jsonl_rows(path, lines):
            prompt = prompt_of(row, (path, number), hh=fmt == "hh", keep_history=keep_history)
            extra = {k: v for k, v in row.items() if k not in _CONSUMED}
            records.append({"id": prompt_id(prompt), "prompt": prompt, **extra})
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
            records.append({"id": prompt_id(prompt), "prompt": prompt, **extra})
    else:
        for _, line in lines:
            if line.strip():
                prompt = [{"role": "user", "content": line.strip()}]
                records.append({"id": prompt_id(prompt), "prompt": prompt})
    if not records:
        raise CaikitError(f"{'<stdin>' if path == '-' else path}: no prompts found (the input is empty)")
    seen: set[str] = set()
    return [r for r in records if not (r["id"] in seen or seen.add(r["id"]))]


def read_completions(path: str) -> list[dict]:
    """Records with a prompt and a completion (e.g. `redteam` output), validated, in file order."""
    records, first_line = [], {}
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
            or not isinstance(completion[-1], dict)
            or completion[-1].get("role") != "assistant"
            or not isinstance(completion[-1].get("content"), str)
        ):
            raise located(*where, "'completion' must be a string or a list ending with an assistant message")
        if not completion[-1]["content"].strip():
            raise located(*where, "the completion is empty")
        rid = row.get("id") if isinstance(row.get("id"), str) and row.get("id") else prompt_id(prompt)
        if rid in first_line:
            raise located(*where, f"duplicate id {rid} (first on line {first_line[rid]})")
        first_line[rid] = number
        records.append({**row, "id": rid, "prompt": prompt, "completion": completion})
    return records


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
    pairs, skipped = [], {"identical": 0, "empty": 0}
    for number, row in read_jsonl(path):
        prompt, a, b, keys = pair_of(row, (path, number))
        if not a or not b:
            skipped["empty"] += 1
            continue
        if a == b:
            skipped["identical"] += 1
            continue
        extra = {k: v for k, v in row.items() if k not in (*keys, "prompt", "id", "caikit", "label", "principles", "p_a")}
        pairs.append({"id": pair_id(prompt, a, b), "prompt": prompt, "a": a, "b": b, **extra})
    return pairs, skipped


def read_preferences(path: str) -> list[dict]:
    """Preference examples `{"prompt", "chosen", "rejected", "label", "subset"?}` for a preference model.
    `label` is p(chosen better): a record's soft `label` (label output) or 1.0 for human pairs. Pairs
    with an empty response are skipped (and counted in a warning)."""
    rows, empty = [], 0
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
        rows.append(example)
    if empty:
        log.warning("%s: skipped %d pairs with an empty response", path, empty)
    return rows
