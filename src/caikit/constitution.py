"""Constitutions: the principles that steer critique, revision and AI feedback.

A constitution holds
- critique/revision principles (`id`, `critique` request, `revision` request), used by `revise`;
- comparison principles (`id`, `question`, `kind` harmlessness|helpfulness), used by `label`/`eval`;
- few-shot critique/revision dialogues and few-shot comparison examples.

`load(spec)` reads any of
- caikit's TOML format (`constitutions/*.toml`, documented in `constitutions/README.md`), or a
  built-in name (`default`, `helpful-only`);
- the CAI paper's files, unchanged: `CritiqueRevisionInstructions.json`,
  `CritiqueRevisionFewShotPrompts.json`, `RLMadisonInstructions.json`, `RLMadisonFewShotPrompts.json`
  (one file, or a directory holding any of them);
- the Hugging Face llm-swarm format `{"constitutions": [{"critic", "revision"}], "system_chat": [[...]]}`.

Every problem found is reported with its location (`check(spec)` lists them all); `load` refuses a
constitution with problems. `Constitution.hash` is a content hash that goes into provenance.
"""

from __future__ import annotations

import sys
from pathlib import Path

from caikit.constitution_json import PAPER_FILES, load_json, read_swarm
from caikit.constitution_model import (  # noqa: F401  (the types are caikit.constitution's too)
    KINDS, Comparison, ComparisonExample, Constitution, CritiqueExample, Principle, Problems, messages_of, text_of,
)
from caikit.errors import CaikitError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN = ("default", "helpful-only")


# -- locating -------------------------------------------------------------------------------------


def builtin_dirs() -> list[Path]:
    """Where the shipped constitutions live: the source tree, or share/caikit in an installed wheel."""
    here = Path(__file__).resolve()
    return [here.parents[2] / "constitutions", Path(sys.prefix) / "share" / "caikit" / "constitutions"]


def locate(spec: str | None) -> Path:
    spec = spec or "default"
    if spec in BUILTIN:
        for folder in builtin_dirs():
            if (folder / f"{spec}.toml").is_file():
                return folder / f"{spec}.toml"
        raise CaikitError(f"--constitution {spec}: the built-in constitution files are missing from this install")
    path = Path(spec).expanduser()
    if not path.exists():
        raise CaikitError(f"--constitution {spec}: no such file or directory (built-in: {', '.join(BUILTIN)})")
    return path


# -- reading each format (each returns a Constitution and a list of problems) --------------------


def read_toml(path: Path) -> tuple[Constitution, Problems]:
    problems = Problems()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CaikitError(f"{path}: not valid TOML ({err})") from None
    known = {"name", "description", "principles", "comparisons", "critique_examples", "comparison_examples"}
    for key in raw:
        if key not in known:
            problems.add(str(path), f"unknown key '{key}' (expected one of: {', '.join(sorted(known))})")
    const = Constitution(name=str(raw.get("name") or path.stem), source=str(path), description=text_of(raw.get("description")))
    for k, item in enumerate(_table_list(raw, "principles", path, problems)):
        where = f"{path}: principles[{k}]"
        const.principles.append(Principle(text_of(item.get("id")), text_of(item.get("critique")), text_of(item.get("revision"))))
        _unknown_keys(item, {"id", "critique", "revision"}, where, problems)
    for k, item in enumerate(_table_list(raw, "comparisons", path, problems)):
        where = f"{path}: comparisons[{k}]"
        const.comparisons.append(
            Comparison(text_of(item.get("id")), text_of(item.get("question")), text_of(item.get("kind")) or "harmlessness")
        )
        _unknown_keys(item, {"id", "question", "kind"}, where, problems)
    for k, item in enumerate(_table_list(raw, "critique_examples", path, problems)):
        where = f"{path}: critique_examples[{k}]"
        prompt = messages_of(item.get("prompt"))
        if prompt is None:
            problems.add(where, "'prompt' must be a non-empty string or a list of {role, content} messages")
        const.critique_examples.append(
            CritiqueExample(
                prompt or [],
                text_of(item.get("response")),
                text_of(item.get("critique")),
                text_of(item.get("revision")),
                text_of(item.get("principle")) or None,
            )
        )
        _unknown_keys(item, {"prompt", "response", "critique", "revision", "principle"}, where, problems)
    for k, item in enumerate(_table_list(raw, "comparison_examples", path, problems)):
        where = f"{path}: comparison_examples[{k}]"
        prompt = messages_of(item.get("prompt"))
        if prompt is None:
            problems.add(where, "'prompt' must be a non-empty string or a list of {role, content} messages")
        const.comparison_examples.append(
            ComparisonExample(
                prompt or [],
                text_of(item.get("response_a")),
                text_of(item.get("response_b")),
                text_of(item.get("answer")).upper(),
                text_of(item.get("question")) or None,
            )
        )
        _unknown_keys(item, {"prompt", "response_a", "response_b", "answer", "question"}, where, problems)
    return const, problems


def _table_list(raw: dict, key: str, path: Path, problems: Problems) -> list[dict]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.add(str(path), f"'{key}' must be an array of tables ([[{key}]])")
        return []
    return value


def _unknown_keys(item: dict, allowed: set, where: str, problems: Problems) -> None:
    for key in item:
        if key not in allowed:
            problems.add(where, f"unknown key '{key}' (expected: {', '.join(sorted(allowed))})")


def read(spec: str | None) -> tuple[Constitution, Problems]:
    """Read a constitution in any supported format, collecting every problem found."""
    path = locate(spec)
    if path.is_dir():
        if (path / "constitution.toml").is_file():
            const, problems = read_toml(path / "constitution.toml")
        else:
            present = [name for name in PAPER_FILES if (path / name).is_file()]
            if not present:
                raise CaikitError(
                    f"{path}: no constitution here (expected constitution.toml or the paper's {', '.join(PAPER_FILES)})"
                )
            const, problems = Constitution(name=path.name, source=str(path)), Problems()
            for name in present:
                PAPER_FILES[name](path / name, const, problems)
    elif path.suffix == ".toml":
        const, problems = read_toml(path)
    elif path.suffix == ".json":
        if path.name in PAPER_FILES:
            const, problems = Constitution(name=path.stem, source=str(path)), Problems()
            PAPER_FILES[path.name](path, const, problems)
        else:
            raw = load_json(path)
            if not (isinstance(raw, dict) and "constitutions" in raw):
                raise CaikitError(f"{path}: not a constitution format caikit knows (TOML, the paper's JSON files, llm-swarm JSON)")
            const, problems = read_swarm(path, raw)
    else:
        raise CaikitError(f"{path}: a constitution is a .toml file, a .json file or a directory")
    problems.extend(validate(const))
    return const, problems


def validate(const: Constitution) -> list[str]:
    """Problems in the content itself: empty or duplicate fields, dangling references."""
    problems = Problems()
    src = const.source
    if not const.principles and not const.comparisons:
        problems.add(src, "no principles and no comparisons")
    seen: set[str] = set()
    for k, p in enumerate(const.principles):
        where = f"{src}: principle {p.id or k}"
        if not p.id:
            problems.add(where, "empty id")
        elif p.id in seen:
            problems.add(where, "duplicate id")
        seen.add(p.id)
        if not p.critique:
            problems.add(where, "empty critique request")
        if not p.revision:
            problems.add(where, "missing revision request")
    seen = set()
    for k, c in enumerate(const.comparisons):
        where = f"{src}: comparison {c.id or k}"
        if not c.id:
            problems.add(where, "empty id")
        elif c.id in seen:
            problems.add(where, "duplicate id")
        seen.add(c.id)
        if not c.question:
            problems.add(where, "empty question")
        if c.kind not in KINDS:
            problems.add(where, f"kind '{c.kind}' is not one of {', '.join(KINDS)}")
    ids = {p.id for p in const.principles}
    for k, e in enumerate(const.critique_examples):
        where = f"{src}: critique example {k}"
        for name in ("response", "critique", "revision"):
            if not getattr(e, name):
                problems.add(where, f"empty '{name}'")
        if e.principle and e.principle not in ids:
            problems.add(where, f"principle '{e.principle}' is not defined")
    for k, e in enumerate(const.comparison_examples):
        where = f"{src}: comparison example {k}"
        for name in ("response_a", "response_b"):
            if not getattr(e, name):
                problems.add(where, f"empty '{name}'")
        if e.answer not in ("A", "B"):
            problems.add(where, f"answer must be A or B, not '{e.answer}'")
    return problems


def load(spec: str | None = None) -> Constitution:
    """A constitution ready to use; any problem is a CaikitError naming the first one and the count."""
    const, problems = read(spec)
    if problems:
        more = f" (and {len(problems) - 1} more; see `caikit constitution validate`)" if len(problems) > 1 else ""
        raise CaikitError(problems[0] + more)
    return const
