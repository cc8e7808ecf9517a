"""Record ids, record shapes and provenance, shared by every stage.

Records follow TRL's conversational formats plus an `id` (a content hash, so stages can join and
resume) and a `caikit` field saying how the record was made (`provenance`).

Prompt-completion (redteam, revise; TRL's SFT format):
    {"id": "e1b61d51ac4f55a6", "prompt": [{"role": "user", "content": "How do I pick a lock?"}],
     "completion": [{"role": "assistant", "content": "..."}], "caikit": {"stage": "redteam", ...}}

Preference (label; TRL's reward/DPO format, `label` = p(chosen better than rejected)):
    {"id": "3f0c9a...", "prompt": [{"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}], "rejected": [{"role": "assistant", "content": "..."}],
     "label": 0.63, "p_a": 0.37, "principles": [...], "caikit": {"stage": "label", ...}}
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from caikit import __version__


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_id(obj, length: int = 16) -> str:
    """A stable id for any JSON value: the first `length` hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:length]


def prompt_id(prompt: list[dict]) -> str:
    """Stable id of a prompt conversation."""
    return content_id(prompt)


def pair_id(prompt: list[dict], a: str, b: str) -> str:
    """Stable id of a pair of responses to a prompt (in this order)."""
    return content_id([prompt, a, b])


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1-based): the records whose id hashes to it. The shards of one input
    partition it: their union is the whole input and no record is in two."""

    index: int
    count: int

    def holds(self, record_id: str) -> bool:
        return int(hashlib.sha256(record_id.encode()).hexdigest()[:15], 16) % self.count == self.index - 1

    def select(self, records: list[dict], key=lambda r: r["id"]) -> tuple[list[dict], dict[str, int]]:
        """This shard's records, and every input record's position (by key) in the whole input."""
        positions = {}
        for k, r in enumerate(records):
            positions.setdefault(key(r), k)
        return [r for r in records if self.holds(key(r))], positions

    def mark(self, record: dict, position: int | None) -> dict:
        """Record which shard wrote `record` and where its input stood, so `caikit merge` restores order."""
        record.setdefault("caikit", {})["shard"] = {"index": self.index, "count": self.count, "position": position}
        return record


def sharded(records: list[dict], shard: Shard | None, key=lambda r: r["id"]):
    """(this shard's records, a function that marks an output record with its shard and input
    position, found by `key`); everything, unmarked, without a shard."""
    if shard is None:
        return records, lambda record: record
    mine, positions = shard.select(records, key)
    return mine, lambda record: shard.mark(record, positions.get(key(record)))


def batches(records, size: int):
    """Lists of `size` consecutive items of an iterable (the last may be shorter)."""
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class Selection:
    """The records a stage works on, read from its input twice: `count()` reads every record once
    (bad input stops the stage there, before a model is loaded or a record written, and the count
    is the progress bar's total), iterating reads them again for the work. `read()` opens a fresh
    reading of the input; the first `limit` records are taken, then this `shard`'s (by `key`), less
    those `skip` says are done. Memory holds this shard's input positions, not the records."""

    def __init__(self, read, *, limit: int | None = None, shard: Shard | None = None, key=lambda r: r["id"], skip=lambda r: False):
        self.read, self.limit, self.shard, self.key, self.skip = read, limit, shard, key, skip
        self.positions: dict[str, int] = {}

    def __iter__(self):
        for k, record in enumerate(itertools.islice(self.read(), self.limit or None)):
            if self.shard is not None:
                key = self.key(record)
                if not self.shard.holds(key):
                    continue
                self.positions.setdefault(key, k)
            if not self.skip(record):
                yield record

    def count(self) -> int:
        return sum(1 for _ in self)

    def mark(self, record: dict) -> dict:
        """Record the shard and input position of an output record (found by `key`), for `caikit merge`."""
        return record if self.shard is None else self.shard.mark(record, self.positions.get(self.key(record)))


def assistant(text: str) -> list[dict]:
    """A response as TRL's conversational completion: one assistant message."""
    return [{"role": "assistant", "content": text}]


def preference_record(rid: str, prompt: list[dict], a: str, b: str, p_a: float, **extra) -> dict:
    """The preference record for responses `a`, `b` with p(a better) = `p_a`: the likelier one is `chosen`."""
    a_wins = p_a >= 0.5
    chosen, rejected = (a, b) if a_wins else (b, a)
    return {
        "id": rid,
        "prompt": prompt,
        "chosen": assistant(chosen),
        "rejected": assistant(rejected),
        "label": p_a if a_wins else 1 - p_a,
        "p_a": p_a,
        **extra,
    }


def provenance(stage: str, backend=None, params=None, **extra) -> dict:
    """The `caikit` field of an output record."""
    info = {"stage": stage}
    if backend is not None:
        info.update(model=backend.model, backend=backend.name, **getattr(backend, "details", {}))
    if params is not None:
        info["sampling"] = params.as_dict()
        info["seed"] = params.seed
    info.update(extra)
    info["version"] = __version__
    info["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return info
