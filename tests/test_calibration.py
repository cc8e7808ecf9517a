"""eval labeler and label --check-human: agreement with human judgments, per labeling mode."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from caikit import calibration
from caikit.cli import app
from caikit.errors import CaikitError


def human_file(path, n=40):
    rows = [{"prompt": f"Question {i}?", "chosen": f"GOOD answer {i}.", "rejected": f"bad answer {i}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def oracle(prompt):
    """Knows the human's taste: prefers the option whose text says GOOD."""
    question = prompt[0]["content"] if isinstance(prompt, list) else prompt
    good, slot_b = question.find("GOOD"), question.find("(B)")
    return [0.0, -4.0] if good < slot_b else [-4.0, 0.0]


def slot_a_lover(prompt):
    return [0.0, -3.0]


def caikit(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_slots_are_a_coin_flip_and_modes_parse(tmp_path):
    pairs = calibration.human_pairs([str(human_file(tmp_path / "h.jsonl"))], None, seed=0)
    assert 10 < sum(p["human"] for p in pairs) < 30, "the human's choice sits in slot A about half the time"
    assert all((p["a"] if p["human"] else p["b"]).startswith("GOOD") for p in pairs)
    assert [m.name for m in calibration.parse_modes("single,debiased,ensemble-4,few-shot,cot,cot-3")] == \
        ["single", "debiased", "ensemble-4", "few-shot", "cot", "cot-3"]
    with pytest.raises(CaikitError, match="--modes best: unknown mode"):
        calibration.parse_modes("single,best")


def test_an_oracle_agrees_and_a_position_lover_does_not(fake_backend, tmp_path):
    data = human_file(tmp_path / "h.jsonl")
    fake_backend.scores = oracle
    code, out, err = caikit("eval", "labeler", "-i", data, "--modes", "single,debiased,ensemble-2", "--json", "-o", tmp_path / "lab")
    assert code == 0, err
    results = json.loads(out)
    for mode in ("single", "debiased", "ensemble-2"):
        m = results["modes"][mode]
        assert m["n"] == 40 and m["agreement"] == 1.0 and m["signal"] and m["ci95"][0] > 0.9
        assert abs(m["position_bias"]) < 0.1 and m["confidence"] > 0.9
    assert "agrees with humans above chance" in results["verdict"]
    assert (tmp_path / "lab" / "reliability.png").stat().st_size > 1000
    assert len((tmp_path / "lab" / "labels.debiased.jsonl").read_text().splitlines()) == 40
    fake_backend.scores = slot_a_lover
    code, out, err = caikit("eval", "labeler", "-i", data, "--modes", "single,debiased", "--json", "-q")
    results = json.loads(out)
    single, debiased = results["modes"]["single"], results["modes"]["debiased"]
    assert 0.25 < single["agreement"] < 0.75 and single["position_bias"] > 0.4 and not single["signal"]
    assert debiased["agreement"] == 0.0 and debiased["confidence"] == pytest.approx(0.0), "a tie agrees with nobody"
    assert "carry no measurable signal" in results["verdict"]


def test_label_refuses_to_label_with_a_labeler_below_the_bar(fake_backend, tmp_path):
    data = human_file(tmp_path / "h.jsonl")
    todo = human_file(tmp_path / "todo.jsonl", n=5)
    out = tmp_path / "labels.jsonl"
    fake_backend.scores = slot_a_lover
    code, stdout, err = caikit("label", "-i", todo, "--check-human", data, "--min-agreement", 0.6, "-o", out)
    assert code == 1 and stdout == "" and not out.exists()
    assert err.strip().splitlines()[-1].startswith("caikit label: error: --min-agreement 0.6") and "nothing labelled" in err
    fake_backend.scores = oracle
    code, stdout, err = caikit("label", "-i", todo, "--check-human", data, "--min-agreement", 0.6, "-o", out)
    assert code == 0, err
    assert "the labels carry signal" in err and len(out.read_text().splitlines()) == 5
    assert caikit("label", "-i", todo, "--min-agreement", 0.6)[0] == 2
