"""Training data as Arrow files: the seeded mix draws what the list-based mix drew, and the
scratch directory does not outlive the run."""

import json
import random

import pytest

from caikit import tables
from caikit.errors import CaikitError


def write(path, n, tag):
    path.write_text("".join(json.dumps({"prompt": f"{tag} question {i}?", "completion": f"{tag} answer {i}."}) + "\n" for i in range(n)))
    return str(path)


def listed(sources, counts, seed):
    """The mix as caikit drew it from lists of records (before Arrow): the reference for the seed."""
    rng, rows = random.Random(seed), []
    for records, count in zip(sources, counts):
        whole, rest = divmod(count, len(records))
        rows += records * whole + rng.sample(records, rest)
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("weights", [(1.0, 0.5), (1.0, 2.5), (0.3, 1.0)])
def test_the_seeded_mix_is_the_one_lists_gave(tmp_path, weights):
    main, extra = write(tmp_path / "main.jsonl", 40, "main"), write(tmp_path / "extra.jsonl", 7, "extra")
    read = lambda path: ({"prompt": [{"role": "user", "content": r["prompt"]}]} for r in map(json.loads, open(path)))  # noqa: E731
    dataset, described = tables.mix([(main, weights[0]), (extra, weights[1])], read, "prompts", 3, tmp_path)
    counts = [d["used"] for d in described]
    assert counts == [max(1, round(w * n)) for w, n in zip(weights, (40, 7))]
    expected = listed([list(read(main)), list(read(extra))], counts, 3)
    assert [r["prompt"] for r in dataset] == [r["prompt"] for r in expected]


def test_an_empty_source_is_named(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(CaikitError, match="empty.jsonl: no records to train on"):
        tables.mix([(str(empty), 1.0)], lambda path: iter(()), "prompts", 0, tmp_path)


def test_scratch_is_removed_and_replaces_a_killed_runs(tmp_path):
    out = tmp_path / "model"
    stale = tmp_path / ".model.data0"
    stale.mkdir()
    (stale / "source0.arrow").write_text("left by kill -9")
    with tables.scratch(out) as where:
        assert where == stale and not any(where.iterdir())
        tables.write([{"prompt": [{"role": "user", "content": "hi"}], "extra": 1}], "prompts", where / "a.arrow")
    assert not stale.exists() and list(tmp_path.iterdir()) == []
