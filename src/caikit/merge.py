"""`caikit merge`: join the outputs of sharded runs (`--shard I/N`) into one file.

Records are joined by `id`: a record that appears in two files is kept once (an exact copy is
dropped silently; copies that differ are counted and reported, and the first is kept). Records
that carry their input position (sharded runs write `caikit.shard.position`) come out in input
order; others keep the order of the files and lines given. A warning names shards that are
missing and provenance that differs between the files (model, backend, endpoint, constitution,
seed, sampling): shards made with different settings are not one run.

The merge streams: a first pass validates every line and keeps, per record, only a hash of its id,
its place in the output order and its byte offset (about 40 bytes, in numpy arrays); the second
reads each kept record back from its offset as it is written. Memory does not grow with the size
of the records, and the output may be one of the inputs (it is written to a temporary file and
renamed when complete).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from array import array

import numpy as np

from caikit import reading
from caikit.errors import CaikitError
from caikit.records import canonical

log = logging.getLogger(__name__)
SETTINGS = ("stage", "model", "backend", "endpoint", "scoring", "seed", "sampling", "constitution", "version")
UNPLACED = np.iinfo(np.int64).max  # the order key of a record without a shard position: after those with one


def settings_of(record: dict) -> str:
    info = record.get("caikit") or {}
    return canonical({k: info.get(k) for k in SETTINGS if k in info})


def without_time(record: dict) -> str:
    info = {k: v for k, v in (record.get("caikit") or {}).items() if k not in ("created", "shard")}
    return canonical({**record, "caikit": info})


def key_of(record_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(record_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class Index:
    """What the first pass keeps of each record, in reading order: 8-byte integers in `array`s."""

    KINDS = {"key": ("Q", np.uint64), "position": ("q", np.int64), "file": ("q", np.int64), "line": ("q", np.int64),
             "offset": ("q", np.int64)}

    def __init__(self):
        self.columns = {name: array(code) for name, (code, _) in self.KINDS.items()}

    def add(self, **values) -> None:
        for name, value in values.items():
            self.columns[name].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.frombuffer(self.columns[name], dtype=kind) for name, (_, kind) in self.KINDS.items()}


def scan(paths: list[str], counts: dict) -> dict[str, np.ndarray]:
    """Validate every record of `paths` and index it; warn about shards and settings."""
    index, settings, shards = Index(), {}, set()
    for f, name in enumerate(paths):
        before = counts["read"]
        for number, line, offset in reading.numbered_lines(name, reading.open_binary(name)):
            for _, row in reading.jsonl_rows(name, [(number, line)]):
                if not isinstance(row.get("id"), str):
                    raise CaikitError(f"{name}:{number}: a record needs a string `id` to be merged")
                counts["read"] += 1
                shard = (row.get("caikit") or {}).get("shard") or {}
                if shard.get("count"):
                    shards.add((shard.get("index"), shard["count"]))
                settings.setdefault(settings_of(row), f"{name}:{number}")
                position = shard.get("position")
                placed = isinstance(position, int) and not isinstance(position, bool) and 0 <= position < UNPLACED
                index.add(key=key_of(row["id"]), position=position if placed else UNPLACED, file=f, line=number, offset=offset)
        if counts["read"] == before:
            raise CaikitError(f"{'<stdin>' if name == '-' else name}: no records (the input is empty)")
    warn_settings(settings, shards)
    return index.arrays()


def warn_settings(settings: dict, shards: set) -> None:
    if len(settings) > 1:
        log.warning("the files were made with different settings (model, seed, constitution, ...): compare %s", " and ".join(settings.values()))
    if shards:
        total = {n for _, n in shards}
        if len(total) > 1:
            log.warning("the files come from different shardings (%s)", ", ".join(f"N={n}" for n in sorted(total)))
        else:
            n = total.pop()
            missing = sorted(set(range(1, n + 1)) - {i for i, _ in shards})
            if missing:
                log.warning("shards %s of %d are missing: the result is not the whole input", ", ".join(map(str, missing)), n)


class Reader:
    """Records read back by (file, byte offset)."""

    def __init__(self, paths: list[str], stack: contextlib.ExitStack):
        self.paths = paths
        self.handles = [stack.enter_context(reading.open_binary(p)) for p in paths]

    def record(self, f: int, offset: int) -> dict:
        handle = self.handles[f]
        handle.seek(offset)
        return json.loads(handle.readline().decode("utf-8").removeprefix("\ufeff"))


def merge(paths: list[str], write) -> dict:
    """Write the union by id of the records in `paths` with `write(record)`, in input order when
    known; return the counts (read, duplicates, conflicts)."""
    counts = {"read": 0, "duplicates": 0, "conflicts": 0}
    with contextlib.ExitStack() as stack:
        stack.enter_context(reading.replayable("-") if "-" in paths else contextlib.nullcontext())
        index = scan(paths, counts)
        by_key = np.argsort(index["key"], kind="stable")  # copies of one id together, the first read first
        keys = index["key"][by_key]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        owner = by_key[np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))]  # each copy's first copy
        reader = Reader(paths, stack)
        conflict = None
        for copy, original in zip(by_key[~first], owner[~first]):
            counts["duplicates"] += 1
            if without_time(reader.record(index["file"][copy], index["offset"][copy])) != without_time(
                    reader.record(index["file"][original], index["offset"][original])):
                counts["conflicts"] += 1
                if conflict is None or (index["file"][copy], index["line"][copy]) < conflict[:2]:
                    conflict = (index["file"][copy], index["line"][copy], reader.record(index["file"][copy], index["offset"][copy])["id"])
        if conflict:
            log.warning("%d ids appear with different contents; the first copy is kept (first conflict: %s:%d (id %s))",
                        counts["conflicts"], paths[conflict[0]], conflict[1], conflict[2])
        kept = by_key[first]
        kept = kept[np.lexsort((index["line"][kept], index["file"][kept], index["position"][kept]))]
        del by_key, keys, first, owner
        for r in kept:
            write(reader.record(index["file"][r], index["offset"][r]))
    return counts
