"""The `caikit` command line: each command parses its options, builds its backends and calls one stage.

- `app`: the Typer app, one-line usage errors, the `command` decorator (errors -> one line, exit code);
- `options`: options shared by the commands, so a flag means the same thing everywhere;
- `data`: redteam, revise, label; `train`: sft, train-pm, rlaif; `evaluate`: eval, inspect, constitution;
  `serve`: serve.
"""

from caikit.cli.app import app, main
from caikit.cli import data, evaluate, serve, train  # noqa: F401  (registers the commands)

__all__ = ["app", "main"]
