"""Helpers shared by the CLI modules: console, error reporting, progress bars."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lmbricks.errors import LmbricksError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

#: The help of every ``--force`` that replaces an output directory.
FORCE_HELP = "Replace an existing output that lmbricks wrote (never an input, a file or a folder of yours)."

#: System errors that are the machine's condition, not a bug: reported as one line, no traceback.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def print_error(message: str) -> None:
    """One red ``error:`` line on stderr, never wrapped (scripts and tests read it as one line)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def user_errors(fn: F) -> F:
    """Turn :class:`LmbricksError` (and a full or read-only disk) into one red line and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LmbricksError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in _STORAGE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            print_error(f"{where}{exc.strerror or exc}{' (disk full)' if exc.errno == errno.ENOSPC else ''}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout, nothing else (so it can be piped)."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=False))


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
