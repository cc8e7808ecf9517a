"""The shape of the source tree: the judge's formula lives in one place, modules and command bodies
stay small, modules do not import each other in a circle, and a flag means one thing everywhere."""

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


def test_no_command_body_is_over_30_lines():
    """Commands parse, check, build, call and print; the logic lives in the stage modules."""
    long = {}
    for path in (SRC / "cli").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any("command" in ast.unparse(d) for d in node.decorator_list):
                body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) else node.body
                lines = body[-1].end_lineno - body[0].lineno + 1
                if lines > 30:
                    long[f"{path.name}:{node.name}"] = lines
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


# -- one meaning per flag ---------------------------------------------------------------------------
# Flags whose meaning (help and type) differs between commands on purpose, and why.
MEANINGS_DIFFER = {
    "--input": "each command says what it reads: one streamed file, or repeatable FILE[:WEIGHT] sources",
    "--output": "a JSONL file for data stages, a dir for training and reports; each says what it writes",
    "--model": "one model spec where a command runs one model; eval compare takes the NAME=SPEC models it compares",
    "--batch-size": "prompts per forward pass when generating or scoring; examples per device batch when training (cli/options.py)",
    "--api-key-env": "a client names the variable holding the key it sends; a server (serve, serve-reward) the key it requires",
    "--limit": "stages read the first N input records; view --export shows at most N records per file",
    "--json": "inspect's summary is its data, on stdout either way; eval prints a table on stderr and JSON on request",
}
# Flags whose default differs between commands on purpose, and why.
DEFAULTS_DIFFER = {
    "--input": "stdin for stages that stream one file; training and eval read named, repeatable files",
    "--output": "stdout for data stages; a training or report dir must be named",
    "--model": "eval mc answers with the embedded model unless --pm scores instead; eval compare has no default models",
    "--batch-size": "training: 4 examples (sft, train-pm), 8 completions in rlaif (2 prompts x 4 generations)",
    "--api-key-env": "a client reads $OPENAI_API_KEY; a server asks for no key unless told",
    "--max-new-tokens": "rlaif's rollouts (64) and eval compare's answers (128) are many; answers that short still show the difference",
    "--temperature": "label and rlaif sample at 1.0 for diverse pairs and on-policy rollouts; the other commands at 0.7",
    "--eval-split": "sft trains on all its data; train-pm holds out 10% for accuracy and calibration",
    "--chunk-size": "a revise record is several rounds of generation, a label pair a few prefills",
    "--shots": "redteam --synthesize shows 6 short prompts, revise 2 whole dialogues",
    "--port": "serve, serve-reward and view run side by side",
    "--limit": "view --export writes a page to share: its first 1000 records per file unless told",
    "--max-batch": "a scored response costs one prefill, a generated sequence many decode steps",
    "--max-items": "a served prompt may ask for n samples of many tokens, a scored response costs one prefill: 64 against 1024",
    "--policy": "label samples from a policy only when given one (else its input holds pairs); rlaif always trains one",
    "--feedback-model": "eval compare may judge with a --pm alone",
}
# Other spellings kept for old command lines: alias -> the flag it stands for.
ALIASES = {"--data": "--input", "--prompts": "--input", "--judge": "--feedback-model", "--model": "--feedback-model",
           "--steps": "--max-steps"}


def flag_uses() -> dict[str, list[dict]]:
    """Every long option of every command: flag -> [{command, help, type, default, aliases}]."""
    import typer

    from caikit.cli import app

    found: dict[str, list[dict]] = {}

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + [name])
        for p in command.params:
            if "Option" not in type(p).__name__:
                continue
            flag, *aliases = [o for o in p.opts if o.startswith("--")]
            kind = (str(p.bare_type()), p.min, p.max, p.metavar, p.multiple, p.is_flag)
            found.setdefault(flag, []).append(
                {"command": " ".join(path), "help": p.help, "type": kind, "default": p.default, "aliases": aliases})

    walk(typer.main.get_command(app), [])
    return found


def test_one_flag_means_the_same_everywhere():
    """One flag name has one help text, type and default in every command, but for the exceptions
    listed above with their reasons (and each listed exception still differs)."""
    uses = flag_uses()
    for flag, found in uses.items():
        meanings = {(u["help"], u["type"]) for u in found}
        defaults = {repr(u["default"]) for u in found}
        where = {u["command"]: (u["help"], u["type"], u["default"]) for u in found}
        assert len(meanings) == 1 or flag in MEANINGS_DIFFER, (flag, where)
        assert len(defaults) == 1 or flag in DEFAULTS_DIFFER or flag in MEANINGS_DIFFER, (flag, where)
        for alias in (a for u in found for a in u["aliases"]):
            assert ALIASES.get(alias) == flag, f"{flag} has the alias {alias}"
    for flag in MEANINGS_DIFFER:
        assert len({(u["help"], u["type"]) for u in uses[flag]}) > 1, f"{flag} no longer differs: drop its exception"
    for flag in DEFAULTS_DIFFER:
        assert len({repr(u["default"]) for u in uses[flag]}) > 1, f"{flag}'s default no longer differs: drop its exception"


def test_inputs_and_feedback_models_have_one_name():
    """Whatever a command reads records from is -i/--input; the model that judges is --feedback-model
    (its older names stay as aliases); vLLM memory is a flag wherever vLLM loads."""
    uses = flag_uses()
    assert not set(ALIASES) - {"--model"} & set(uses), "an alias became a flag of its own"
    import typer

    from caikit.cli import app

    def commands(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from commands(sub, path + [name])
        if not hasattr(command, "commands"):
            yield " ".join(path), command

    for name, command in commands(typer.main.get_command(app), []):
        options = {p.name: p for p in command.params if "Option" in type(p).__name__}
        if "input" in options:
            assert {"-i", "--input"} <= set(options["input"].opts), name
        if "backend" in options:
            assert "vllm_memory" in options, f"{name} loads models with --backend but has no --vllm-memory"
        assert "judge" not in options, name
