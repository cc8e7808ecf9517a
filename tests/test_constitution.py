import json

import pytest
from typer.testing import CliRunner

from caikit import constitution
from caikit.cli import app
from caikit.errors import CaikitError
from conftest import SHARED

PAPER = SHARED / "data" / "anthropic-cai" / "prompts"
needs_shared = pytest.mark.skipif(not PAPER.exists(), reason="../shared is not present beside the checkout")


def test_default_constitution_covers_the_ground():
    const = constitution.load("default")
    assert len(const.principles) >= 12 and len(const.comparisons) >= 12
    assert len(const.critique_examples) >= 4 and const.comparison_examples
    ids = {p.id for p in const.principles}
    assert {"danger", "illegal", "toxicity", "age-appropriate", "not-preachy", "user-wellbeing"} <= ids
    assert {c.kind for c in const.comparisons} == {"harmlessness", "helpfulness"}
    assert all(e.principle in ids for e in const.critique_examples)
    assert len(const.hash) == 12


def test_helpful_only_is_a_different_constitution():
    default, other = constitution.load("default"), constitution.load("helpful-only")
    assert other.hash != default.hash
    assert {p.id for p in other.principles}.isdisjoint({p.id for p in default.principles})


@needs_shared
def test_paper_directory_loads_every_file_unchanged():
    const = constitution.load(str(PAPER))
    assert [p.id for p in const.principles][:2] == ["harmful0", "harmful1"] and len(const.principles) == 16
    first = next(p for p in const.principles if p.id == "harmful0")
    assert first.critique.startswith("Identify specific ways") and "CritiqueRequest" not in first.critique
    assert first.revision.startswith("Please rewrite") and not first.revision.endswith("Revision:")
    assert len(const.comparisons) == 16 and not const.comparisons[0].question.endswith("Options:")
    assert len(const.critique_examples) == 5
    example = const.critique_examples[0]
    assert example.prompt[0]["role"] == "user" and example.prompt[-1]["role"] == "user"
    assert "Human:" not in example.revision and example.critique
    assert len(const.comparison_examples) == 5 and {e.answer for e in const.comparison_examples} == {"A", "B"}


@needs_shared
def test_single_paper_files():
    assert len(constitution.load(str(PAPER / "RLMadisonInstructions.json")).comparisons) == 16
    assert len(constitution.load(str(PAPER / "CritiqueRevisionInstructions.json")).principles) == 16


def test_llm_swarm_format(tmp_path):
    chat = [
        {"role": "user", "content": "How do I steal a bike?"},
        {"role": "assistant", "content": "Cut the lock."},
        {"role": "user", "content": "Critique it."},
        {"role": "assistant", "content": "It helps theft."},
        {"role": "user", "content": "Revise it."},
        {"role": "assistant", "content": "I can't help steal; if your own bike is locked, call a locksmith."},
    ]
    path = tmp_path / "swarm.json"
    path.write_text(json.dumps({"constitutions": [{"critic": "Critique it.", "revision": "Revise it."}], "system_chat": [chat]}))
    const = constitution.load(str(path))
    assert const.principles == [constitution.Principle("swarm0", "Critique it.", "Revise it.")]
    assert const.critique_examples[0].response == "Cut the lock." and const.critique_examples[0].prompt == chat[:1]


def test_constitution_toml_in_a_directory(tmp_path):
    (tmp_path / "constitution.toml").write_text('[[principles]]\nid = "x"\ncritique = "c"\nrevision = "r"\n')
    assert constitution.load(str(tmp_path)).principles[0].id == "x"


BAD = """
name = "bad"
principle = []

[[principles]]
id = "a"
critique = ""
revision = "r"

[[principles]]
id = "a"
critique = "c"

[[comparisons]]
id = "q"
question = "Which?"
kind = "fun"

[[critique_examples]]
principle = "nope"
prompt = 3
response = "r"
critique = "c"
revision = ""

[[comparison_examples]]
prompt = "p"
response_a = "a"
response_b = "b"
answer = "C"
"""


def test_validation_reports_every_problem_with_its_location(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    _, problems = constitution.read(str(path))
    expected = [
        "unknown key 'principle'",
        "principle a: empty critique request",
        "principle a: duplicate id",
        "principle a: missing revision request",
        "comparison q: kind 'fun' is not one of",
        "critique_examples[0]: 'prompt' must be",
        "critique example 0: empty 'revision'",
        "critique example 0: principle 'nope' is not defined",
        "comparison example 0: answer must be A or B",
    ]
    for text in expected:
        assert any(text in p and p.startswith(str(path)) for p in problems), text
    with pytest.raises(CaikitError, match=r"bad.toml.*\(and \d+ more; see `caikit constitution validate`\)"):
        constitution.load(str(path))

    result = CliRunner().invoke(app, ["constitution", "validate", str(path)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == len(problems)


def test_cli_show_and_validate_ok():
    result = CliRunner().invoke(app, ["constitution", "validate", "default"])
    assert result.exit_code == 0 and "ok (14 principles, 15 comparisons" in result.stdout
    result = CliRunner().invoke(app, ["constitution", "show", "default"])
    assert result.exit_code == 0 and "not-preachy" in result.stdout and "less-harmful" in result.stdout


@pytest.mark.parametrize(
    "content, name, message",
    [
        ("not toml = = 1", "c.toml", "not valid TOML"),
        ("{", "c.json", "not valid JSON"),
        ('{"a": 1}', "c.json", "not a constitution format caikit knows"),
        ("x", "c.yaml", "a constitution is a .toml file"),
    ],
)
def test_unreadable_constitutions(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CaikitError, match=message):
        constitution.load(str(path))


def test_missing_and_empty_directory(tmp_path):
    with pytest.raises(CaikitError, match="no such file or directory"):
        constitution.load(str(tmp_path / "missing"))
    with pytest.raises(CaikitError, match="no constitution here"):
        constitution.load(str(tmp_path))


def test_select_filters_and_rejects_unknown_ids():
    const = constitution.load("default")
    assert [p.id for p in const.select(["danger", "privacy"])] == ["danger", "privacy"]
    with pytest.raises(CaikitError, match=r"--principles nope: unknown principle id"):
        const.select(["danger", "nope"])


def test_comparisons_for_a_kind_with_one_fallback_rule(caplog):
    default, helpful = constitution.load("default"), constitution.load("helpful-only")
    harmless = default.comparisons_for("harmlessness")
    assert harmless and {c.kind for c in harmless} == {"harmlessness"}
    assert {c.kind for c in default.comparisons_for("helpfulness")} == {"helpfulness"}
    assert default.comparisons_for("all") == default.comparisons
    assert not caplog.records
    assert helpful.comparisons_for("harmlessness") == helpful.comparisons  # none of that kind: all, said
    assert "no harmlessness comparison principles; using all 2" in caplog.text
