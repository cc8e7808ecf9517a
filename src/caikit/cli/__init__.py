"""The `caikit` command line: each command parses its options, builds its backends and calls one stage.

- `app`: the Typer app, one-line usage errors, the `command` decorator (errors -> one line, exit code);
- `options`: options shared by the commands, so a flag means the same thing everywhere;
- `data`: redteam, revise, label; `records`: inspect, merge; `serve`: serve, serve-reward;
  `train`: sft, train-pm, rlaif; `evaluate`: eval; `constitution`: constitution show|validate.
"""

from caikit.cli.app import app, main
from caikit.cli import data, records, serve, train, evaluate, constitution  # noqa: F401, I001  (registers the commands, in help order)

__all__ = ["app", "main"]
