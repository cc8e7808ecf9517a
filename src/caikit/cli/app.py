"""The `caikit` app: one-line usage errors, the `command` decorator that turns caikit's errors into
one stderr line and an exit code, `--version`.

Conventions shared by every command: `-i/--input` and `-o/--output` default to `-` (stdin/stdout);
data goes to stdout, progress and logs to stderr; bad input or usage exits 2 with one line naming
the file and line or the option at fault; a runtime failure exits 1 with one line; set
CAIKIT_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from caikit import __version__
from caikit.errors import CaikitError, FieldError

# The flag a user types for each library field a FieldError names (where one command spells it
# otherwise, it names the error itself, as rlaif does for its PM, --reward).
FLAGS = {"max_new_tokens": "--max-new-tokens", "temperature": "--temperature", "top_p": "--top-p", "pm": "--pm"}


class OneLineErrors(TyperGroup):
    """Usage errors (a bad flag or value) are one stderr line and exit code 2, like bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:  # typer's own click: usage errors
            if not standalone_mode:
                raise
            if type(err).__name__ != "NoArgsIsHelpError":  # (the help is already shown)
                command = err.ctx.command_path if getattr(err, "ctx", None) else "caikit"
                typer.echo(f"{command}: error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            sys.exit(1)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


def typer_app(**settings) -> typer.Typer:
    return typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       context_settings={"help_option_names": ["-h", "--help"]}, **settings)


app = typer_app(
    name="caikit",
    help="Constitutional AI from the command line: red-team -> revise -> sft -> label -> train-pm -> rlaif -> eval.",
)


def command(name: str | None = None, group: typer.Typer | None = None, **settings):
    """Register a command whose CaikitErrors become one stderr line and exit code 2."""

    def register(func):
        title = f"caikit {group.info.name + ' ' if group else ''}{name or func.__name__.replace('_', '-')}"

        @functools.wraps(func)
        def run(*args, **kwargs):
            from caikit.console import say

            try:
                return func(*args, **kwargs)
            except (typer.Exit, typer.TyperException, typer.Abort):
                raise
            except CaikitError as err:
                if isinstance(err, FieldError):
                    err = err.named(FLAGS)
                say(f"{title}: error: {err}")
                raise typer.Exit(err.exit_code) from None
            except BrokenPipeError:  # `caikit ... | head`: the reader left; not an error
                sys.stderr.close()
                raise typer.Exit(0) from None
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            except Exception as err:
                if os.environ.get("CAIKIT_DEBUG"):
                    raise
                message = f"{title}: failed: {type(err).__name__}: {err}".splitlines()[0]
                say(message + " (CAIKIT_DEBUG=1 shows the traceback)")
                raise typer.Exit(1) from None

        return (group or app).command(name, **settings)(run)

    return register


def _version(value: bool):
    if value:
        typer.echo(f"caikit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    """Constitutional AI (Bai et al. 2022) as composable stages that exchange JSONL."""


def main():
    app()
