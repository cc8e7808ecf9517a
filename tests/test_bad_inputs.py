"""The bad-input corpus (tests/bad_inputs/cases.toml): each case exits 2 with one line naming the
file:line or the option at fault, prints nothing on stdout, shows no traceback and leaves no file."""

import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caikit.cli import app

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which pyproject.toml allows: tomli, a dependency there
    import tomli as tomllib

HERE = Path(__file__).parent / "bad_inputs"
CASES = tomllib.loads((HERE / "cases.toml").read_text())["case"]


def make_input(kind: str, path: Path, tiny: Path, tmp: Path) -> None:
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "latin1":
        path.write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
    elif kind == "huge_line":
        with open(path, "w") as f:
            f.write('{"prompt": "fine"}\n{"prompt": "')
            f.write("a" * (50 << 20))
            f.write('"}\n')
    elif kind == "model_without_weights":
        shutil.copytree(tiny, tmp / "noweights", ignore=shutil.ignore_patterns("*.safetensors"))
    elif kind == "pickle_only_model":
        import torch
        from safetensors.torch import load_file

        shutil.copytree(tiny, tmp / "pickled", ignore=shutil.ignore_patterns("*.safetensors"))
        torch.save(load_file(str(tiny / "model.safetensors")), tmp / "pickled" / "pytorch_model.bin")
    else:
        raise ValueError(kind)


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def test_the_corpus_is_broad():
    assert len(CASES) >= 40 and len({c["name"] for c in CASES}) == len(CASES)
    assert len({c["args"][0] if c["args"][0] != "eval" else " ".join(c["args"][:2]) for c in CASES}) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input(case, tiny_model, tiny_pm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    source = work / ("in" + (Path(case["file"]).suffix if "file" in case else ".jsonl"))
    if "file" in case:
        shutil.copy(HERE / case["file"], source)
    elif "lines" in case:
        source.write_text("".join(line + "\n" for line in case["lines"]).removesuffix("\n" if case.get("torn") else ""))
    if "make" in case:
        make_input(case["make"], source, tiny_model, work)
    places = {"in": source, "out": work / "out.jsonl", "tmp": work, "tiny": tiny_model, "pm": tiny_pm, "here": HERE}
    args = [a.format(**places) for a in case["args"]]
    before = files_under(work)
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.stderr[-2000:]}"
    assert len(lines) == 1 and case["message"] in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert files_under(work) == before, sorted(map(str, files_under(work) - before))
