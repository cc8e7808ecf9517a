"""Human labels on a pair file, one pair at a time (`caikit view --annotate PAIRS -o human.jsonl`).

- The two answers are shown in a seeded random order per pair (`--seed`), so position cannot lean
  the human one way; the order shown is written with the label.
- Each answer is a preference record `{id, prompt, chosen, rejected, label: 1.0}` (the human's pick
  is `chosen`), which `eval labeler -i`, `label --check-human` and `train-pm` read as they read
  hh-rlhf; `annotation` says who, when, how long, the order shown and the source line.
- A tie or skip goes to OUT.skipped.jsonl beside it: not a preference, but not shown again.
- Each answer is appended, flushed and fsynced before the next pair is shown: a kill loses at most
  the answer being given, and the next run resumes after the answered ids (a torn last line is cut).
- The pair's reference label — the AI label of a `label` file, or the file's own choice (hh-rlhf's
  chosen) — is shown only after the human has answered, with the running agreement and its 95%
  Wilson interval: no anchoring.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from caikit import inputs, reading, stats
from caikit.errors import CaikitError
from caikit.inspection import lookup
from caikit.outputs import whole_lines
from caikit.records import assistant, pair_id, provenance


def reference(row: dict, keys: tuple[str, str]) -> tuple[str, float] | None:
    """(what it is, p(first response better)) of a pair's own label, or None when it has none."""
    label, p_a = row.get("label"), row.get("p_a")
    what = "AI label" if lookup(row, "caikit.stage") == "label" else "the file's label"
    if keys[0] == "completion_a" and isinstance(p_a, (int, float)) and not isinstance(p_a, bool):
        return what, float(p_a)
    if isinstance(label, (int, float)) and not isinstance(label, bool) and 0 <= label <= 1:
        return what, float(label)
    if keys[0] in ("chosen", "text_correct"):
        return "the file's choice", 1.0
    return None


def skipped_path(output: str) -> Path:
    path = Path(output)
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.skipped.jsonl")


def answered(path: Path):
    """The records already written to `path` (after cutting a torn last line)."""
    if not path.exists():
        return
    whole_lines(path)
    for _, row in reading.read_jsonl(str(path)) if path.stat().st_size else ():
        yield row


class Annotation:
    """The state of one labelling session: the pair shown now, what was answered, the agreement."""

    def __init__(self, pairs: str, output: str, *, annotator: str, seed: int):
        self.pairs, self.output, self.annotator, self.seed = pairs, Path(output), annotator, seed
        self.skipped = skipped_path(output)
        if not self.output.parent.is_dir():
            raise CaikitError(f"-o {output}: directory {self.output.parent} does not exist")
        if Path(pairs).resolve() == self.output.resolve():
            raise CaikitError(f"-o {output}: is also the pair file; write to another file")
        self.done: set[str] = set()
        self.hits = self.compared = self.answers = self.skips = 0
        for row in answered(self.output):
            self.done.add(row.get("id"))
            self.answers += 1
            self._count(lookup(row, "annotation.reference.p_chosen"))
        for row in answered(self.skipped):
            self.done.add(row.get("id"))
            self.skips += 1
        self.total = sum(1 for _ in self._pairs(pending_only=False))  # checks the whole file first
        self.last: dict | None = None
        self._lock = threading.Lock()
        self._pending = self._pairs(pending_only=True)
        self.current = next(self._pending, None)
        self.shown_at = time.monotonic()

    def _pairs(self, pending_only: bool):
        for number, row in reading.read_jsonl(self.pairs):
            prompt, a, b, keys = inputs.pair_of(row, (self.pairs, number))
            if not a or not b or a == b:
                continue
            pid = pair_id(prompt, a, b)
            if pending_only and pid in self.done:
                continue
            flip = random.Random(f"{self.seed}:{pid}:view").random() < 0.5
            yield {"id": pid, "prompt": prompt, "a": a, "b": b, "line": number, "keys": keys,
                   "left": "b" if flip else "a", "reference": reference(row, keys)}

    def _count(self, p_chosen) -> None:
        if isinstance(p_chosen, (int, float)) and p_chosen != 0.5:
            self.compared += 1
            self.hits += p_chosen > 0.5

    def agreement(self) -> dict | None:
        if not self.compared:
            return None
        low, high = stats.wilson(self.hits, self.compared)
        return {"hits": self.hits, "n": self.compared, "rate": self.hits / self.compared, "ci95": (low, high)}

    def answer(self, pid: str, choice: str) -> bool:
        """Record the human's `choice` ("left", "right" or "skip") for the pair shown; False when
        `pid` is not the pair shown now (a form sent twice, or from an old page)."""
        with self._lock:
            pair = self.current
            if pair is None or pair["id"] != pid or choice not in ("left", "right", "skip"):
                return False
            seconds = round(time.monotonic() - self.shown_at, 2)
            right = "a" if pair["left"] == "b" else "b"
            note = {"annotator": self.annotator, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": seconds,
                    "source": {"path": self.pairs, "line": pair["line"], "keys": list(pair["keys"])}}
            shown = {"id": pid, "prompt": pair["prompt"], "choice": choice}
            if choice == "skip":
                self._append(self.skipped, {"id": pid, "choice": "tie-or-skip", "annotation": {**note, "left": pair["left"]},
                                            "caikit": provenance("annotate", seed=self.seed)})
                self.skips += 1
            else:
                picked = pair["left"] if choice == "left" else right
                chosen, rejected = (pair["a"], pair["b"]) if picked == "a" else (pair["b"], pair["a"])
                ref = pair["reference"]
                p_chosen = None if ref is None else round(ref[1] if picked == "a" else 1 - ref[1], 6)
                note.update(left="chosen" if pair["left"] == picked else "rejected",
                            reference=None if ref is None else {"what": ref[0], "p_chosen": p_chosen})
                self._append(self.output, {"id": pid, "prompt": pair["prompt"], "chosen": assistant(chosen), "rejected": assistant(rejected),
                                           "label": 1.0, "annotation": note, "caikit": provenance("annotate", seed=self.seed)})
                self.answers += 1
                self._count(p_chosen)
                shown.update(reference=ref and {"what": ref[0], "p_chosen": p_chosen})
            self.done.add(pid)
            self.last = shown
            self.current = next(self._pending, None)
            self.shown_at = time.monotonic()
            return True

    @staticmethod
    def _append(path: Path, record: dict) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
