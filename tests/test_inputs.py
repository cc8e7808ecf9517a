import gzip
import io
import json
import sys

import pytest

from caikit.errors import CaikitError
from caikit.inputs import parse_transcript, read_prompts
from caikit.records import prompt_id
from conftest import ROOT, SHARED

HH = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\nHuman: I'm locked out.\n\nAssistant: Call a locksmith."


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_jsonl_prompt_string_messages_and_extras(tmp_path):
    path = write(
        tmp_path,
        "p.jsonl",
        "\n".join(
            [
                json.dumps({"prompt": "  Hello there  ", "category": "greeting"}),
                "",
                json.dumps({"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]}),
                json.dumps({"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2"}]}),
            ]
        ),
    )
    records = read_prompts(path)
    assert [r["prompt"] for r in records] == [
        [{"role": "user", "content": "Hello there"}],
        [{"role": "user", "content": "Q1"}],  # a trailing assistant turn is not part of the prompt
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2"}],
    ]
    assert records[0]["category"] == "greeting"
    assert records[0]["id"] == prompt_id(records[0]["prompt"]) and len(records[0]["id"]) == 16


def test_hh_transcripts_first_turn_or_history(tmp_path):
    path = write(tmp_path, "hh.jsonl", json.dumps({"chosen": HH, "rejected": HH}) + "\n")
    [first] = read_prompts(path)
    assert first["prompt"] == [{"role": "user", "content": "How do I pick a lock?"}]
    [history] = read_prompts(path, keep_history=True)
    assert [m["role"] for m in history["prompt"]] == ["user", "assistant", "user"]
    assert history["prompt"][-1]["content"] == "I'm locked out."
    # explicit --format hh reads a transcript in `prompt` too; auto does when it looks like one
    path2 = write(tmp_path, "hh2.jsonl", json.dumps({"prompt": HH}) + "\n")
    assert read_prompts(path2, "hh")[0]["prompt"] == first["prompt"]
    assert read_prompts(path2)[0]["prompt"] == first["prompt"]


def test_parse_transcript_rejects_non_transcripts():
    assert parse_transcript("just text") is None
    assert parse_transcript("\n\nAssistant: only the assistant") is None


def test_gzip_and_shared_hh_rlhf_file():
    path = SHARED / "data" / "hh-rlhf" / "harmless-base_test.jsonl.gz"
    if not path.exists():
        pytest.skip("../shared is not present beside the checkout")
    records = read_prompts(str(path))
    assert 2000 < len(records) <= 2312  # deduplicated first human turns
    assert all(r["prompt"][0]["role"] == "user" and r["prompt"][0]["content"] for r in records)


def test_gzip_roundtrip(tmp_path):
    path = write(tmp_path, "p.jsonl.gz", gzip.compress(b'{"prompt": "zipped"}\n'), "wb")
    assert read_prompts(path)[0]["prompt"][0]["content"] == "zipped"


def test_csv_with_prompt_field_and_xstest():
    path = SHARED / "data" / "xstest" / "xstest_prompts.csv"
    if not path.exists():
        pytest.skip("../shared is not present beside the checkout")
    records = read_prompts(str(path))
    assert len(records) == 450
    assert {"type", "label"} <= set(records[0])


def test_csv_other_column(tmp_path):
    path = write(tmp_path, "p.csv", 'id,question,topic\n1,"What is 2+2, really?",math\n2,Why?,x\n')
    records = read_prompts(path, prompt_field="question")
    assert [r["prompt"][0]["content"] for r in records] == ["What is 2+2, really?", "Why?"]
    assert records[0]["topic"] == "math"


def test_txt_bom_blank_lines_and_duplicates(tmp_path):
    path = write(tmp_path, "p.txt", "\ufeffFirst prompt\n\n  Second prompt \nFirst prompt\n")
    records = read_prompts(path)
    assert [r["prompt"][0]["content"] for r in records] == ["First prompt", "Second prompt"]


def test_stdin_is_sniffed(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"prompt": "from stdin"}\n')))
    assert read_prompts("-")[0]["prompt"][0]["content"] == "from stdin"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"plain line\n")))
    assert read_prompts("-")[0]["prompt"][0]["content"] == "plain line"


def test_builtin_examples_are_big_enough():
    for name, minimum in (("redteam.jsonl", 60), ("helpful.jsonl", 60)):
        records = read_prompts(str(ROOT / "examples" / "prompts" / name))
        assert len(records) >= minimum
        assert all(r["category"] for r in records)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n', r"bad.jsonl:2: invalid JSON"),
        ("list.jsonl", '{"prompt": "ok"}\n\n[1, 2]\n', r"list.jsonl:3: expected a JSON object, got list"),
        ("noprompt.jsonl", '{"question": "hmm"}\n', r"noprompt.jsonl:1: no usable prompt"),
        ("emptyprompt.jsonl", '{"prompt": "   "}\n', r"emptyprompt.jsonl:1: 'prompt' is empty"),
        ("badmsg.jsonl", '{"messages": [{"role": "bot", "content": "x"}]}\n', r"badmsg.jsonl:1: message 0 must be"),
        ("onlyassistant.jsonl", '{"messages": [{"role": "assistant", "content": "x"}]}\n', r"onlyassistant.jsonl:1: the conversation has no user turn"),
        ("badhh.jsonl", '{"chosen": "no speakers here"}\n', r"badhh.jsonl:1: 'chosen' is not an hh-rlhf transcript"),
        ("empty.jsonl", "\n\n", r"empty.jsonl: no prompts found"),
        ("nocol.csv", "text\nhello\n", r"nocol.csv:1: no column 'prompt' \(columns: text\)"),
        ("emptycell.csv", "prompt\nhello\n\"\"\n", r"emptycell.csv:3: empty 'prompt' cell"),
        ("prompts.xml", "<x/>", r"prompts.xml: cannot tell the format"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(CaikitError, match=message):
        read_prompts(path)


def test_non_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "latin.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', "wb")
    with pytest.raises(CaikitError, match=r"latin.jsonl:2: not valid UTF-8 \(byte 0xe9\)"):
        read_prompts(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(CaikitError, match=r"nothere.jsonl: no such file"):
        read_prompts(str(tmp_path / "nothere.jsonl"))
    path = write(tmp_path, "p.jsonl", '{"prompt": "x"}\n')
    with pytest.raises(CaikitError, match=r"--format yaml: unknown format"):
        read_prompts(path, "yaml")
    with pytest.raises(CaikitError, match=r"is a directory"):
        read_prompts(str(tmp_path))


def test_jsonl_lines_end_at_newline_only(tmp_path):
    """JSON strings may hold U+2028, U+0085 or \\x1c unescaped; str.splitlines() would cut records there."""
    path = tmp_path / "odd.jsonl"
    path.write_text('{"prompt": "one\u2028two\u0085three"}\r\n{"prompt": "second"}\n', encoding="utf-8")
    prompts = [r["prompt"][0]["content"] for r in read_prompts(str(path))]
    assert prompts == ["one\u2028two\u0085three", "second"]
