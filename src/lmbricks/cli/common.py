"""Helpers shared by the CLI modules: console, error reporting, tables, progress bars.

The shared typer options (``--force``, ``--json``, ``MODEL``, ...) are in :mod:`lmbricks.cli.options`.
"""

from __future__ import annotations

import errno
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lmbricks.cli.options import FORCE_HELP as FORCE_HELP  # re-exported: the shared options live there
from lmbricks.cli.options import reads_checkpoints as reads_checkpoints
from lmbricks.cli.tables import print_json as print_json
from lmbricks.cli.tables import print_list as print_list
from lmbricks.errors import LmbricksError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

#: System errors that are the machine's condition, not a bug: reported as one line, no traceback.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def command_line() -> str:
    """The command as typed (``lmbricks moe upcycle ...``, shell-quoted), recorded in ``lmbricks.json``."""
    return shlex.join(["lmbricks", *sys.argv[1:]])


def print_error(message: str) -> None:
    """One red ``error:`` line on stderr, never wrapped (scripts and tests read it as one line)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def user_errors(fn: F) -> F:
    """Turn :class:`LmbricksError` (and a full or read-only disk) into one red line on stderr and exit
    code 2 (no traceback).

    The line is never wrapped at the terminal width (paths in it stay copyable); a message with
    several lines is joined into one.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LmbricksError as exc:
            text = ""
            for part in (p.strip() for p in str(exc).splitlines()):
                if part:
                    text += (" " if not text or text.endswith(":") else "; ") + part if text else part
            print_error(text)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in _STORAGE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            print_error(f"{where}{exc.strerror or exc}{' (disk full)' if exc.errno == errno.ENOSPC else ''}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def notes_to_stderr(update: Callable[[str], None]) -> Callable[[str], None]:
    """A progress callback: ``note:`` messages become lines on stderr, the rest go to ``update``."""

    def progress(msg: str) -> None:
        if msg.startswith("note:"):
            err_console.print(msg, highlight=False, soft_wrap=True, markup=False)
        else:
            update(msg)

    return progress


@contextmanager
def progress_bar(transient: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr with count, elapsed and remaining time."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    ) as progress:
        yield progress


@contextmanager
def stage_progress(first: str = "starting") -> Iterator[Callable[[str, int | None], None]]:
    """A progress bar driven by a pipeline's ``progress(name, n)``: a name starts a stage of ``n`` items
    (None: unknown), an empty name advances the stage by ``n``."""
    with progress_bar() as bar:
        task = bar.add_task(first, total=None)

        def progress(name: str, n: int | None) -> None:
            if name:
                bar.update(task, description=name, total=n, completed=0)
            elif n:
                bar.advance(task, n)

        yield progress


@contextmanager
def training_progress(label: str, steps: int) -> Iterator[tuple[Callable[[int, float], None], Callable[[str], None]]]:
    """A progress bar over ``steps`` optimizer steps: yields the ``on_step(step, loss)`` and ``on_status`` callbacks."""
    with progress_bar() as bar:
        task = bar.add_task(label, total=steps)

        def on_step(step: int, loss: float) -> None:
            bar.update(task, completed=step, description=f"{label} (loss {loss:.3f})")

        yield on_step, bar.console.print
