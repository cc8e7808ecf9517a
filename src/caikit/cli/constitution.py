"""`caikit constitution show|validate`: look at and check constitutions."""

from __future__ import annotations

from typing import Annotated

import typer

from caikit.cli.app import app, command, typer_app

constitution_app = typer_app(name="constitution", help="Show and check constitutions.")
app.add_typer(constitution_app)
ConstitutionArg = Annotated[
    str, typer.Argument(help="Built-in name (default, helpful-only), a TOML/JSON file or a directory.")
]


@command("show", group=constitution_app)
def constitution_show(path: ConstitutionArg = "default"):
    """Print a constitution's principles, comparisons and few-shot examples as tables.

    Example: caikit constitution show ../shared/data/anthropic-cai/prompts
    """
    from rich.console import Console
    from rich.table import Table

    from caikit import constitution

    const = constitution.load(path)
    out = Console()
    out.print(f"[bold]{const.name}[/bold]  hash {const.hash}  ({const.source})")
    if const.description:
        out.print(const.description)
    principles = Table("id", "critique request", "revision request", title=f"{len(const.principles)} critique/revision principles")
    for p in const.principles:
        principles.add_row(p.id, p.critique, p.revision)
    comparisons = Table("id", "kind", "question", title=f"{len(const.comparisons)} comparison principles")
    for c in const.comparisons:
        comparisons.add_row(c.id, c.kind, c.question)
    for table in (principles, comparisons):
        if table.row_count:
            out.print(table)
    out.print(
        f"few-shot: {len(const.critique_examples)} critique/revision dialogues, "
        f"{len(const.comparison_examples)} comparison examples"
    )


@command("validate", group=constitution_app)
def constitution_validate(path: ConstitutionArg):
    """Report every problem in a constitution (with its location); exit 2 if there is any.

    Example: caikit constitution validate constitutions/default.toml
    """
    from caikit import constitution

    const, problems = constitution.read(path)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(2)
    typer.echo(
        f"{const.source}: ok ({len(const.principles)} principles, {len(const.comparisons)} comparisons, "
        f"{len(const.critique_examples) + len(const.comparison_examples)} few-shot examples; hash {const.hash})"
    )
