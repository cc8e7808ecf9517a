"""Reading files one line at a time: a file, `.gz`, or standard input (`-`), as numbered lines of
UTF-8 text or JSONL records, with `FILE:LINE: reason` errors (a CaikitError). Memory holds one line,
whatever the file's size.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path

from caikit.errors import CaikitError, located

MAX_LINE = 16 << 20  # characters in one JSONL record: far beyond any model's context


def read_bytes(path: str) -> bytes:
    """A whole file's bytes, for formats that are one document (BIG-bench's JSON tasks)."""
    with open_binary(path) as f:
        try:
            return f.read()
        except (OSError, EOFError) as err:  # a gzip stream that is corrupt or cut short
            raise CaikitError(f"{path}: {'not a valid gzip file' if path.endswith('.gz') else 'cannot read'} ({err})") from None


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



_stdin_copy: list[str] = []  # where `replayable("-")` copied standard input


@contextlib.contextmanager
def replayable(path: str):
    """Within it, `path` can be read more than once: standard input is first copied to a temporary
    file, which `-` then names (messages still say `-`)."""
    if path != "-" or _stdin_copy:
        yield
        return
    with tempfile.NamedTemporaryFile(prefix="caikit-stdin-") as copy:
        shutil.copyfileobj(sys.stdin.buffer, copy)
        copy.flush()
        _stdin_copy.append(copy.name)
        try:
            yield
        finally:
            _stdin_copy.clear()


def open_binary(path: str):
    """A file (or stdin for `-`; `.gz` decompressed as it is read) opened for reading bytes."""
    if path == "-":
        return open(_stdin_copy[0], "rb") if _stdin_copy else contextlib.nullcontext(sys.stdin.buffer)
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
