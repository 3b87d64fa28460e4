"""Helpers shared by the CLI modules: console, error reporting, progress bars."""

from __future__ import annotations

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


def user_errors(fn: F) -> F:
    """Turn :class:`LmbricksError` into one red line on stderr and exit code 2 (no traceback).

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
            err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
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
