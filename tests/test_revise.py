import json

import pytest
from typer.testing import CliRunner

from caikit import constitution
from caikit.backends import SamplingParams
from caikit.cli import app
from caikit.revise import clean, run as revise_run

CONST = constitution.load("default")


def records(n=3):
    return [
        {
            "id": f"id{i}",
            "prompt": [{"role": "user", "content": f"How do I do bad thing {i}?"}],
            "completion": [{"role": "assistant", "content": f"Here is how to do bad thing {i}."}],
            "category": "test",
            "caikit": {"stage": "redteam"},
        }
        for i in range(n)
    ]


def write_records(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scripted(prompt):
    """Critique asks get 'CRIT n', revision asks get 'Revision: REV n' (n = turns so far)."""
    last = prompt[-1]["content"]
    is_critique = any(last == p.critique for p in CONST.principles)
    return f"{'CRIT' if is_critique else 'Revision: REV'} {len(prompt)}"


def test_clean_strips_scaffolding():
    assert clean("Revision: Better answer.") == "Better answer."
    assert clean("**Revised response:** Better.") == "Better."
    assert clean("Sure, here's a revised response:\nBetter.") == "Better."
    assert clean("Here is the rewritten reply: \"Quoted.\"") == "Quoted."
    assert clean("<|im_start|>assistant\nFine.<|im_end|>") == "Fine."
    assert clean("Good answer.\nHuman: next question") == "Good answer."
    assert clean("Revision:   ") == ""
    assert clean("The response is fine: really.") == "The response is fine: really."


def test_rounds_are_batched_structured_and_recorded(fake_backend):
    fake_backend.replies = scripted
    params = SamplingParams(seed=5)
    out = list(revise_run(records(3), fake_backend, CONST, params, rounds=3, shots=0))
    # all critiques of a round in one call, then all revisions: 2 calls per round for 3 records
    assert [len(c[1]) for c in fake_backend.calls] == [3] * 6
    assert len(out) == 3
    for rec in out:
        assert [s["round"] for s in rec["revisions"]] == [1, 2, 3]
        assert all(s["critique"].startswith("CRIT") and s["revision"].startswith("REV") for s in rec["revisions"])
        assert rec["completion"] == [{"role": "assistant", "content": rec["revisions"][-1]["revision"]}]
        assert rec["initial"][0]["content"].startswith("Here is how")
        assert rec["category"] == "test"
        assert rec["caikit"]["principle_ids"] == [s["principle_id"] for s in rec["revisions"]]
        assert rec["caikit"]["constitution"]["hash"] == CONST.hash and rec["caikit"]["upstream"] == {"stage": "redteam"}


def test_principle_draws_are_seeded_and_independent_of_chunking(fake_backend):
    fake_backend.replies = scripted
    draws = lambda out: [r["caikit"]["principle_ids"] for r in out]  # noqa: E731
    a = draws(revise_run(records(4), fake_backend, CONST, SamplingParams(seed=1), rounds=4, shots=0))
    b = draws(revise_run(records(4), fake_backend, CONST, SamplingParams(seed=1), rounds=4, shots=0, chunk_size=1))
    c = draws(revise_run(records(4), fake_backend, CONST, SamplingParams(seed=2), rounds=4, shots=0))
    assert a == b and a != c
    assert len({pid for row in a for pid in row}) > 3  # drawn, not fixed


def test_append_context_sees_the_chain_and_fresh_does_not(fake_backend):
    fake_backend.replies = scripted
    list(revise_run(records(1), fake_backend, CONST, SamplingParams(), rounds=2, shots=0, context="append"))
    round2_critique = fake_backend.calls[2][1][0]
    assert [m["content"] for m in round2_critique if m["content"].startswith(("CRIT", "REV"))] == ["CRIT 3", "REV 5"]
    fake_backend.calls.clear()
    list(revise_run(records(1), fake_backend, CONST, SamplingParams(), rounds=2, shots=0, context="fresh"))
    round2_critique = fake_backend.calls[2][1][0]
    assert len(round2_critique) == 3  # prompt, latest revision, critique request
    assert round2_critique[1] == {"role": "assistant", "content": "REV 5"}


def test_few_shot_dialogues_come_first(fake_backend):
    fake_backend.replies = scripted
    list(revise_run(records(1), fake_backend, CONST, SamplingParams(), rounds=1, shots=2))
    critique_ask = fake_backend.calls[0][1][0]
    assert len(critique_ask) == 2 * 6 + 3
    assert critique_ask[12]["content"] == "How do I do bad thing 0?"
    examples = {e.revision for e in CONST.critique_examples}
    assert critique_ask[5]["content"] in examples and critique_ask[11]["content"] in examples


def test_empty_revision_keeps_the_previous_text(fake_backend):
    fake_backend.replies = lambda p: "CRIT" if any(p[-1]["content"] == q.critique for q in CONST.principles) else "Revision:  "
    [rec] = revise_run(records(1), fake_backend, CONST, SamplingParams(), rounds=2, shots=0)
    assert all(s["failed"] for s in rec["revisions"])
    assert rec["completion"][0]["content"] == "Here is how to do bad thing 0."


def test_no_critique_revises_directly(fake_backend):
    fake_backend.replies = scripted
    [rec] = revise_run(records(1), fake_backend, CONST, SamplingParams(), rounds=2, shots=1, critique=False)
    assert len(fake_backend.calls) == 2 and "critique" not in rec["revisions"][0]
    ask = fake_backend.calls[0][1][0]
    assert len(ask) == 4 + 3  # one shot: prompt, answer, revision request, revision; then ours


def cli(*args, input=None):
    return CliRunner().invoke(app, ["revise", *args], input=input)


def test_cli_on_tiny_model_emit_round_and_keep_all(tiny_model, tmp_path):
    src = write_records(tmp_path / "in.jsonl", records(2))
    base = ["-i", str(src), "--model", str(tiny_model), "--rounds", "2", "--max-new-tokens", "6", "--critique-tokens", "4"]
    out = tmp_path / "out.jsonl"
    result = cli(*base, "-o", str(out), "--seed", "3")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["revisions"]) == 2 for r in rows)
    assert all(r["completion"][0]["content"].strip() for r in rows)
    assert all(r["caikit"]["stage"] == "revise" and r["caikit"]["seed"] == 3 for r in rows)

    result = cli(*base, "--seed", "3", "--emit-round", "1")
    assert result.exit_code == 0
    emitted = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["completion"][0]["content"] == r["revisions"][0]["revision"] for r in emitted)

    result = cli(*base, "--keep-all")
    kept = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["id"] for r in kept) == ["id0-r1", "id0-r2", "id1-r1", "id1-r2"]
    assert all(r["source_id"] == r["id"].split("-")[0] and len(r["revisions"]) == r["round"] for r in kept)


def test_cli_resume(tiny_model, tmp_path, monkeypatch):
    src = write_records(tmp_path / "in.jsonl", records(4))
    out = tmp_path / "out.jsonl"
    args = ["-i", str(src), "-o", str(out), "--model", str(tiny_model), "--rounds", "1", "--max-new-tokens", "4",
            "--critique-tokens", "4", "--chunk-size", "2"]
    from caikit.backends.hf import TransformersBackend

    real, calls = TransformersBackend.generate, []

    def crash_in_second_chunk(self, prompts, params):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(self, prompts, params)

    monkeypatch.setattr(TransformersBackend, "generate", crash_in_second_chunk)
    assert cli(*args).exit_code == 1
    assert len((tmp_path / "out.jsonl.partial").read_text().splitlines()) == 2 and not out.exists()
    monkeypatch.setattr(TransformersBackend, "generate", real)
    result = cli(*args, "--resume")
    assert result.exit_code == 0, result.stderr
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == ["id0", "id1", "id2", "id3"]


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"prompt": "hi"}], [], "in.jsonl:1: not a prompt-completion record"),
        ([{"prompt": "hi", "completion": ""}], [], "in.jsonl:1: the completion is empty"),
        ([{"prompt": "hi", "completion": [{"role": "user", "content": "x"}]}], [], "in.jsonl:1: 'completion' must be"),
        (records(1) + records(1), [], "in.jsonl:2: duplicate id id0 (first on line 1)"),
        (records(1), ["--principles", "danger,nonsense"], "--principles nonsense: unknown principle id"),
        (records(1), ["--emit-round", "9", "--rounds", "2"], "--emit-round 9: only 2 rounds"),
        (records(1), ["--context", "sideways"], "--context sideways: choose append or fresh"),
        (records(1), ["--constitution", "nowhere.toml"], "--constitution nowhere.toml: no such file"),
    ],
)
def test_bad_input(tmp_path, rows, extra, message):
    src = write_records(tmp_path / "in.jsonl", rows)
    result = cli("-i", str(src), "-o", str(tmp_path / "out.jsonl"), *extra)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_invalid_constitution_is_refused(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[[principles]]\nid = "a"\ncritique = "c"\n')
    src = write_records(tmp_path / "in.jsonl", records(1))
    result = cli("-i", str(src), "--constitution", str(bad))
    assert result.exit_code == 2 and "principle a: missing revision request" in result.stderr


def test_pipe_redteam_into_revise(tiny_model):
    first = CliRunner().invoke(app, ["redteam", "--model", str(tiny_model), "--max-new-tokens", "6", "-q"], input="Prompt one?\nPrompt two?\n")
    assert first.exit_code == 0
    second = cli("--model", str(tiny_model), "--rounds", "2", "--max-new-tokens", "6", "--critique-tokens", "4", "-q", input=first.stdout)
    assert second.exit_code == 0, second.stderr
    rows = [json.loads(line) for line in second.stdout.splitlines()]
    assert [r["prompt"][0]["content"] for r in rows] == ["Prompt one?", "Prompt two?"]
    assert all(r["caikit"]["upstream"]["stage"] == "redteam" for r in rows)
