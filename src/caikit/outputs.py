"""Writing JSONL records: to stdout line by line, or to a file that only appears when complete.

A file output is written to `FILE.partial`, one flushed line per record, and renamed to `FILE` when
the stage finishes. A crash or Ctrl-C leaves `FILE.partial` holding only whole records; `--resume`
picks it up (or a finished `FILE`) and skips the ids it already holds. A Makefile target therefore
never sees a half-written file under its real name.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from caikit.errors import CaikitError, located

log = logging.getLogger(__name__)


def partial_path(path: str) -> Path:
    return Path(path + ".partial")


def whole_lines(path: Path, chunk: int = 1 << 16) -> None:
    """Cut a torn last line (from a kill mid-write) off a partial file, reading only its end."""
    with path.open("r+b") as f:
        end = f.seek(0, os.SEEK_END)
        at = end
        while at > 0:
            start = max(0, at - chunk)
            f.seek(start)
            block = f.read(at - start)
            if at == end and block.endswith(b"\n"):
                return
            newline = block.rfind(b"\n")
            if newline >= 0:
                f.truncate(start + newline + 1)
                return
            at = start
        f.truncate(0)


def done_ids(path: Path) -> set[str]:
    ids = set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                ids.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise located(path, number, "cannot resume: not a caikit record with an 'id'") from None
    return ids


class JsonlWriter:
    """`with JsonlWriter(path, resume=...) as out: out.write(record)`; `out.done` holds resumed ids."""

    def __init__(self, path: str, *, resume: bool = False, inputs: tuple[str, ...] = ()):
        self.path = path
        self.done: set[str] = set()
        self.count = 0
        self._file = None
        self._reopened = False  # a finished FILE was moved to FILE.partial to be resumed
        if path == "-":
            if resume:
                raise CaikitError("--resume needs an output file (-o FILE), not stdout")
            return
        target, partial = Path(path), partial_path(path)
        if target.is_dir():
            raise CaikitError(f"-o {path}: is a directory")
        if not target.parent.is_dir():
            raise CaikitError(f"-o {path}: directory {target.parent} does not exist")
        if any(source != "-" and Path(source).resolve() == target.resolve() for source in inputs):
            raise CaikitError(f"-o {path}: is also the input file; write to another file")
        if resume:
            if not partial.exists() and target.exists():
                os.replace(target, partial)
                self._reopened = True
            if partial.exists():
                whole_lines(partial)
                self.done = done_ids(partial)
        elif partial.exists():
            partial.unlink()

    def _open(self):
        if self._file is None:
            if self.path == "-":
                self._file = sys.stdout
            else:
                self._file = partial_path(self.path).open("a", encoding="utf-8")
        return self._file

    def write(self, record: dict) -> None:
        f = self._open()
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if self.path == "-":
            return False
        partial = partial_path(self.path)
        if self._file is not None:
            self._file.close()
        if kind is None:
            if not partial.exists():
                partial.touch()  # nothing new to write (all resumed or no input): still produce the file
            os.replace(partial, self.path)
        elif self._reopened and self.count == 0:
            os.replace(partial, self.path)  # failed before adding anything: give the finished file back
        elif partial.exists():
            if partial.stat().st_size == 0:
                partial.unlink()
            else:
                log.warning("stopped early: whole records kept in %s; rerun with --resume to continue", partial)
        return False
