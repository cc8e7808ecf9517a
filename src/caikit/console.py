"""stderr for people: logging, progress bars and summaries (stdout carries data only)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def stderr() -> Console:
    return Console(stderr=True, emoji=False, highlight=False)


def say(text: str) -> None:
    """One plain line on stderr (no markup, no wrapping), for summaries and errors."""
    stderr().print(text, markup=False, highlight=False, soft_wrap=True)


def setup_logging(quiet: bool, libraries: bool = True) -> None:
    """caikit logs to stderr; the libraries' own chatter (progress bars, advice) is turned down
    (`libraries=False`: a command that uses no model, which need not spend a second importing them)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notices, not ours
    handler = RichHandler(console=stderr(), show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler], force=True, format="%(message)s")
    for noisy in ("transformers", "huggingface_hub", "datasets", "accelerate", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not libraries:
        return
    import sys

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    else:  # read when it is imported: most commands never need it, and importing it takes a second
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


@contextmanager
def stdout_to_stderr():
    """Send what is written to stdout meanwhile (by Python code, or by child processes started now,
    which keep the redirected descriptor) to stderr: stdout carries data only."""
    import contextlib
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def loggers_to_stderr(name: str) -> None:
    """Point the handlers of logger `name` (and its children) that write to stdout at stderr."""
    import sys

    names = [name] + [n for n in logging.root.manager.loggerDict if n.startswith(name + ".")]
    for logger in (logging.getLogger(n) for n in names):
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
                handler.setStream(sys.stderr)


@contextmanager
def progress(description: str, total: int, quiet: bool = False):
    """Yield `advance(n)`; draws a bar with ETA on stderr when it is a terminal."""
    console = stderr()
    if quiet or not console.is_terminal:
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def progress_factory(quiet: bool):
    """`progress(description, total)` bound to `quiet`, for stages that open their own bars."""
    return lambda description, total: progress(description, total, quiet)


def table(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column summary table on stderr."""
    from rich.table import Table

    shown = Table(title=title, show_header=False)
    for key, value in rows:
        shown.add_row(key, value)
    stderr().print(shown)


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
