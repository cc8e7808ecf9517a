"""The shape of the source tree: the judge's formula lives in one place, modules stay small, and
modules do not import each other in a circle."""

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "caikit"


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_the_debiased_formula_is_written_once():
    """The A/B arithmetic, the debiased mean and the swapped order's p(A) turned into p(first better),
    is written in judge.py only."""
    pattern = re.compile(r"\+ 1 - |1 - [\w\[\]]*slot")
    hits = [(p.name, n) for p in SRC.rglob("*.py") for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert {name for name, _ in hits} == {"judge.py"} and len(hits) == 2, hits


def test_no_module_is_over_400_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in modules().items() if len(path.read_text().splitlines()) > 400}
    assert long == {}


def imports(path: Path, known: set[str]) -> set[str]:
    """caikit modules that `path` imports, at module level or inside functions (a circle through a
    function-level import is still a circle, only a later one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("caikit"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("caikit")}
    return found & known


def test_no_import_circle():
    known = modules()
    graph = {name: imports(path, set(known)) - {name} for name, path in known.items()}

    def visit(name, trail):
        assert name not in trail, " -> ".join(trail + [name])
        for nxt in graph.get(name, ()):
            visit(nxt, trail + [name])

    for name in graph:
        visit(name, [])


def test_no_command_module_imports_another():
    """The command modules share what app.py and options.py hold, not each other's code."""
    known = modules()
    commands = {name for name in known if name.startswith("caikit.cli.") and name not in ("caikit.cli.app", "caikit.cli.options")}
    crossing = {name: sorted(imports(known[name], set(known)) & (commands - {name})) for name in commands}
    assert {k: v for k, v in crossing.items() if v} == {}
