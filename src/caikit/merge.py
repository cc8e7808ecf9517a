"""`caikit merge`: join the outputs of sharded runs (`--shard I/N`) into one file.

Records are joined by `id`: a record that appears in two files is kept once (an exact copy is
dropped silently; copies that differ are counted and reported, and the first is kept). Records
that carry their input position (sharded runs write `caikit.shard.position`) come out in input
order; others keep the order of the files and lines given. A warning names shards that are
missing and provenance that differs between the files (model, backend, endpoint, constitution,
seed, sampling): shards made with different settings are not one run.
"""

from __future__ import annotations

import logging

from caikit import inputs
from caikit.errors import CaikitError
from caikit.records import canonical

log = logging.getLogger(__name__)
SETTINGS = ("stage", "model", "backend", "endpoint", "scoring", "seed", "sampling", "constitution", "version")


def settings_of(record: dict) -> str:
    info = record.get("caikit") or {}
    return canonical({k: info.get(k) for k in SETTINGS if k in info})


def without_time(record: dict) -> str:
    info = {k: v for k, v in (record.get("caikit") or {}).items() if k not in ("created", "shard")}
    return canonical({**record, "caikit": info})


def merge(paths: list[str]) -> tuple[list[dict], dict]:
    """The union by id of the records in `paths`, in input order when known; and counts."""
    kept: dict[str, tuple[tuple, dict]] = {}
    counts = {"read": 0, "duplicates": 0, "conflicts": 0}
    settings: dict[str, str] = {}
    shards: set[tuple[int, int]] = set()
    first_conflict = None
    for f, path in enumerate(paths):
        for line, row in inputs.read_jsonl(path):
            if not isinstance(row.get("id"), str):
                raise CaikitError(f"{path}:{line}: a record needs a string `id` to be merged")
            counts["read"] += 1
            shard = (row.get("caikit") or {}).get("shard") or {}
            if shard.get("count"):
                shards.add((shard.get("index"), shard["count"]))
            settings.setdefault(settings_of(row), f"{path}:{line}")
            if row["id"] in kept:
                counts["duplicates"] += 1
                if without_time(kept[row["id"]][1]) != without_time(row):
                    counts["conflicts"] += 1
                    first_conflict = first_conflict or f"{path}:{line} (id {row['id']})"
                continue
            position = shard.get("position")
            kept[row["id"]] = ((0, position, f, line) if isinstance(position, int) else (1, 0, f, line), row)
    if counts["conflicts"]:
        log.warning("%d ids appear with different contents; the first copy is kept (first conflict: %s)", counts["conflicts"], first_conflict)
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
    records = [row for _, row in sorted(kept.values(), key=lambda item: item[0])]
    return records, counts
