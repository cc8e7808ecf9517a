"""The CLI reference, docs/cli.md, generated from the app by Typer's own `typer ... utils docs`
(`make docs`, i.e. `python -m caikit.cli.reference docs/cli.md`); its first line names the Typer
version that wrote it, since another version may lay the same help out differently."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path


def generate() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cli.md"
        subprocess.run([sys.executable, "-m", "typer", "caikit.cli", "utils", "docs", "--name", "caikit", "--output", str(out)],
                       check=True, capture_output=True, cwd=tmp)
        return f"<!-- Generated from the app by `make docs` with Typer {version('typer')}; do not edit. -->\n\n{out.read_text()}"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(generate())
