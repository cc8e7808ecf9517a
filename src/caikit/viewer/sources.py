"""What `caikit view PATH...` shows: the JSONL files named, or found in a run directory, each indexed
when first opened; a run's `report.md` files with their plots; and, for `eval compare`'s
judgments.jsonl, the models' answers in the responses/ beside it."""

from __future__ import annotations

import html
import re
import threading
from pathlib import Path

from caikit.errors import CaikitError
from caikit.viewer.index import ERROR, LineIndex, parse_line

SUFFIXES = (".jsonl", ".jsonl.gz")


class Source:
    """One JSONL file; its index is built on first use (a run directory may hold many)."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self._index = None
        self._lock = threading.Lock()
        self.answers = Answers(path.parent / "responses") if (path.parent / "responses").is_dir() else None

    @property
    def index(self) -> LineIndex:
        with self._lock:
            if self._index is None:
                self._index = LineIndex(str(self.path))
            return self._index

    def size(self) -> int:
        return self.path.stat().st_size


class Answers:
    """`eval compare`'s cached answers, NAME.SET.jsonl in responses/: answer(name, set, prompt id)
    reads one by seeking (the offsets of each file are indexed when it is first asked for)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._offsets: dict[Path, dict[str, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, name, kind, prompt_id) -> dict | None:
        if not all(isinstance(v, str) for v in (name, kind, prompt_id)):
            return None
        path = self.folder / f"{name}.{kind}.jsonl"
        if path.parent != self.folder or not path.is_file():
            return None
        with self._lock:
            if path not in self._offsets:
                self._offsets[path] = self._scan(path)
            at = self._offsets[path].get(prompt_id)
        if at is None:
            return None
        with path.open("rb") as f:
            f.seek(at)
            record = parse_line(0, f.readline())
        completion = record.get("completion")
        answer = completion[-1].get("content") if isinstance(completion, list) and completion and isinstance(completion[-1], dict) else None
        return None if ERROR in record else {"prompt": record.get("prompt"), "answer": answer}

    @staticmethod
    def _scan(path: Path) -> dict[str, int]:
        offsets, at = {}, 0
        with path.open("rb") as f:
            for raw in f:
                match = re.search(rb'"id": ?"([0-9a-f]{16})"', raw[:4096])
                if match:
                    offsets.setdefault(match.group(1).decode(), at)
                at += len(raw)
        return offsets


class Sources:
    """The files and reports of the paths given."""

    def __init__(self, paths: list[str]):
        self.files: list[Source] = []
        self.reports: list[Path] = []
        for given in paths:
            path = Path(given)
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
                self.files += [Source(p, str(p.relative_to(path))) for p in found]
                self.reports += sorted(path.rglob("report.md"))
            elif path.is_file():
                if path.name == "report.md":
                    self.reports.append(path)
                else:
                    self.files.append(Source(path, path.name))
            else:
                raise CaikitError(f"{given}: no such file or directory")
        if not self.files and not self.reports:
            raise CaikitError(f"{', '.join(paths)}: no JSONL files or report.md found")

    def file(self, n: int) -> Source:
        if not 0 <= n < len(self.files):
            raise KeyError(n)
        return self.files[n]


def report_html(path: Path, asset_url) -> str:
    """A report.md as HTML, its images pointed at `asset_url(name)`. Raw HTML in the file is shown as
    text: `<` and `&` are escaped before markdown reads it (a model name or answer cannot inject)."""
    import markdown

    text = path.read_text(encoding="utf-8", errors="replace").replace("&", "&amp;").replace("<", "&lt;")
    body = markdown.markdown(text, extensions=["tables"])

    def image(match):
        src = html.unescape(match.group(1))
        return f'src="{html.escape(asset_url(src))}"' if re.fullmatch(r"[\w.\-]+\.png", src) else 'src=""'

    return re.sub(r'src="([^"]*)"', image, body)
