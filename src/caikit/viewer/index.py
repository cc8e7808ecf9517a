"""A JSONL file opened for browsing without reading it into memory: an index of byte offsets (8 bytes
per record, plus 4 for its line number), records read back by seeking on demand, and filtered scans
that keep only the positions of their matches (4 bytes each) and the facet counts.

A 1M-record file is indexed in one sequential read (seconds) and held as 12 MB. A `.gz` file cannot
be sought in, so it is first decompressed into a temporary file, which lives as long as the index.
A line that is not a JSON object is not an error here: it is shown as an error row with its line
number, and the view goes on.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import threading
from array import array
from collections import Counter
from pathlib import Path

from caikit.errors import CaikitError
from caikit.inspection import lookup, parse_filter

ERROR = "__error__"  # the key of the stand-in record of a line that is not a JSON object


def parse_line(number: int, raw: bytes) -> dict:
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return {ERROR: f"line {number}: invalid JSON ({getattr(err, 'msg', 'not UTF-8')})", "line": number}
    if not isinstance(row, dict):
        return {ERROR: f"line {number}: a JSON {type(row).__name__}, not an object", "line": number}
    return row


class LineIndex:
    """The records of one JSONL file, by position: `len(index)`, `index.record(i)`, `index.line(i)`."""

    def __init__(self, path: str):
        self.path = path
        self._copy = None
        source = Path(path)
        if not source.is_file():
            raise CaikitError(f"{path}: no such file")
        if path.endswith(".gz"):
            self._copy = tempfile.NamedTemporaryFile(prefix="caikit-view-", suffix=".jsonl")
            try:
                with gzip.open(source, "rb") as f:
                    shutil.copyfileobj(f, self._copy)
            except (OSError, EOFError) as err:
                raise CaikitError(f"{path}: not a valid gzip file ({err})") from None
            self._copy.flush()
            source = Path(self._copy.name)
        self.file = source
        self.offsets, self.numbers = array("Q"), array("I")
        offset = 0
        with source.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if raw[:64].strip() or raw.strip():
                    self.offsets.append(offset)
                    self.numbers.append(number)
                offset += len(raw)
        self.size = offset
        self._handle = source.open("rb")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.offsets)

    def line(self, i: int) -> int:
        return self.numbers[i]

    def record(self, i: int) -> dict:
        with self._lock:
            self._handle.seek(self.offsets[i])
            raw = self._handle.readline()
        return parse_line(self.numbers[i], raw)

    def records(self):
        """(position, record) for every record, in one sequential read (for scans)."""
        with self.file.open("rb") as f:
            i = 0
            for number, raw in enumerate(f, start=1):
                if i < len(self.numbers) and self.numbers[i] == number:
                    yield i, parse_line(number, raw)
                    i += 1

    def close(self) -> None:
        self._handle.close()
        if self._copy is not None:
            self._copy.close()


def strings(value):
    """Every string inside a record's values (the text a free-text search looks in)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def principles_of(record: dict) -> set[str]:
    """The principle ids a record was made or judged under (revise rounds, label principles, judgments)."""
    found = set(lookup(record, "caikit.principle_ids") or [])
    found.update(p["id"] for p in record.get("principles") or [] if isinstance(p, dict) and isinstance(p.get("id"), str))
    found.update(s["principle_id"] for s in record.get("revisions") or [] if isinstance(s, dict) and isinstance(s.get("principle_id"), str))
    if isinstance(record.get("principle_id"), str):
        found.add(record["principle_id"])
    return {p for p in found if isinstance(p, str)}


class Query:
    """What a page asks for: `--where` filters (inspect's syntax, ANDed), free text, a principle."""

    def __init__(self, where: list[str] = (), text: str = "", principle: str = ""):
        self.where = [w for w in where if w.strip()]
        self.text = text.strip()
        self.principle = principle.strip()
        self.checks = [parse_filter(w) for w in self.where]  # a CaikitError names the bad filter
        self.key = (tuple(self.where), self.text.lower(), self.principle)

    def __bool__(self) -> bool:
        return bool(self.where or self.text or self.principle)

    def keeps(self, record: dict) -> bool:
        if ERROR in record:
            return False
        if not all(check(record) for check in self.checks):
            return False
        if self.principle and self.principle not in principles_of(record):
            return False
        return not self.text or any(self.text.lower() in s.lower() for s in strings(record))


class Scan:
    """One pass over an index in a background thread: the positions of the records a query keeps,
    and the stage and principle counts among them. Pages read what it has found so far."""

    def __init__(self, index: LineIndex, query: Query):
        self.index, self.query = index, query
        self.matches = array("I")
        self.errors = array("I")  # positions of lines that are not records
        self.stages, self.principles = Counter(), Counter()
        self.scanned = 0
        self.done = False
        self._changed = threading.Condition()
        threading.Thread(target=self._run, name="caikit-view-scan", daemon=True).start()

    def _run(self) -> None:
        try:
            for i, record in self.index.records():
                with self._changed:
                    if ERROR in record:
                        self.errors.append(i)
                    elif self.query.keeps(record):
                        self.matches.append(i)
                        self.stages[lookup(record, "caikit.stage") or "(none)"] += 1
                        self.principles.update(principles_of(record))
                    self.scanned = i + 1
                    if i % 256 == 0:
                        self._changed.notify_all()
        finally:
            with self._changed:
                self.done = True
                self._changed.notify_all()

    def wait(self, count: int, timeout: float) -> None:
        """Until `count` matches are found, the scan ends, or `timeout` seconds pass."""
        with self._changed:
            self._changed.wait_for(lambda: self.done or len(self.matches) >= count, timeout)

    def page(self, start: int, size: int) -> list[int]:
        if not self.query:  # every position is a match: wait for the scan only as long as a small file takes
            self.wait(len(self.index) + 1, timeout=0.5)
            return list(range(start, min(start + size, len(self.index))))
        self.wait(start + size, timeout=5.0)
        with self._changed:
            return list(self.matches[start : start + size])

    def total(self) -> int | None:
        """The number of matches, or None while it is not known yet."""
        if not self.query:
            return len(self.index)
        return len(self.matches) if self.done else None


class Scans:
    """The scans of the last few queries per file, so paging through a filter does not rescan."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._scans: dict = {}
        self._lock = threading.Lock()

    def get(self, index: LineIndex, query: Query) -> Scan:
        key = (id(index), query.key)
        with self._lock:
            scan = self._scans.pop(key, None) or Scan(index, query)
            self._scans[key] = scan
            while len(self._scans) > self.keep:
                self._scans.pop(next(iter(self._scans)))
            return scan
