"""Training data on disk. The training stages stream their records into Arrow files that `datasets`
memory-maps, the form TRL's trainers take (they map it into Arrow caches of their own beside it), so
preparing a million examples holds one batch of records and the drawn indices in memory, not a
Python dict per record.

Mixing (`sft --mix`, `-i FILE:WEIGHT`) draws indices, not records: WEIGHT x the file's record count
of them (seeded; the whole file once per whole WEIGHT, the rest sampled), all sources shuffled
together. The draw is the one caikit made from lists of records, so a seed picks the same examples
in the same order as before.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from caikit.errors import CaikitError
from caikit.training import sha256_file


@functools.cache
def _features():
    from datasets import Features, List, Value

    messages = List({"role": Value("string"), "content": Value("string")})
    pair = {"prompt": messages, "chosen": messages, "rejected": messages, "label": Value("float64")}
    return {
        "prompts": Features({"prompt": messages}),
        "completions": Features({"prompt": messages, "completion": messages}),
        "pairs": Features(pair),
        "preferences": Features({**pair, "subset": Value("string")}),
    }


def features(kind: str):
    """The columns of one kind of training data: prompts, completions, pairs or preferences
    (pairs plus an optional `subset`). Messages are `{role, content}`."""
    return _features()[kind]


@contextmanager
def scratch(near: Path | None = None):
    """A directory for one run's Arrow files and the trainers' caches of them, removed at the end:
    beside `near` (the output dir, on a disk with room for the data), one per process of a
    multi-process run; a killed run's is removed by the next. Without `near`, a temporary directory."""
    if near is None:
        with tempfile.TemporaryDirectory(prefix="caikit-data-") as path:
            yield Path(path)
        return
    path = near.with_name(f".{near.name}.data{os.environ.get('RANK', '0')}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write(records, kind: str, path: Path):
    """Stream `records` into the Arrow file `path` (each record's columns of `kind`, missing ones
    empty) and return it memory-mapped as a `datasets.Dataset`."""
    from datasets import Dataset
    from datasets.arrow_writer import ArrowWriter

    columns = features(kind)
    with ArrowWriter(features=columns, path=str(path)) as writer:
        for record in records:
            writer.write({name: record.get(name) for name in columns})
        writer.finalize()
    return Dataset.from_file(str(path))


def draw(size: int, count: int, rng: random.Random):
    """`count` indices into `size` records: every one per whole repeat, then a seeded sample."""
    import numpy as np

    whole, rest = divmod(count, size)
    return np.concatenate([np.tile(np.arange(size, dtype=np.int64), whole), np.array(rng.sample(range(size), rest), dtype=np.int64)])


def mix(sources: list[tuple[str, float]], read, kind: str, seed: int, where: Path, *, relative_to_first=False, describe=None):
    """The examples `read(FILE)` yields for each `(FILE, WEIGHT)`, mixed and shuffled (seeded), as one
    Dataset: WEIGHT x the file's record count, or WEIGHT x the first file's count with
    `relative_to_first` (sft's --mix). Arrow files go in `where`. Returns the Dataset and, per source,
    its path, SHA-256, record count, weight and count used (plus `describe(its Dataset)`)."""
    import numpy as np
    from datasets import concatenate_datasets

    rng = random.Random(seed)
    parts, picks, described = [], [], []
    for k, (path, weight) in enumerate(sources):
        part = write(read(path), kind, where / f"source{k}.arrow")
        if not len(part):
            raise CaikitError(f"{'<stdin>' if path == '-' else path}: no records to train on")
        size = len(part) if not (relative_to_first and described) else described[0]["records"]
        count = max(1, round(weight * size))
        picks.append(draw(len(part), count, rng) + sum(len(p) for p in parts))
        parts.append(part)
        info = {"path": path, "sha256": sha256_file(path) if path != "-" else None, "records": len(part), "weight": weight, "used": count}
        described.append({**info, **(describe(part) if describe else {})})
    order = np.concatenate(picks)
    rng.shuffle(order)
    return concatenate_datasets(parts).select(order), described
