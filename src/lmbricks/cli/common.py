"""Helpers shared by the CLI modules: console, error reporting, tables, progress bars.

The shared typer options (``--force``, ``--json``, ``MODEL``, ...) are in :mod:`lmbricks.cli.options`.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lmbricks.cli.options import FORCE_HELP as FORCE_HELP  # re-exported: the shared options live there
from lmbricks.cli.options import reads_checkpoints as reads_checkpoints
from lmbricks.errors import LmbricksError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

#: System errors that are the machine's condition, not a bug: reported as one line, no traceback.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


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


def print_list(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: str = "name") -> None:
    """Print a list as a table whose ``key`` column (the names users type) is never cut or wrapped.

    Piped output gets the table at its natural width. A terminal too narrow for the names plus a
    few characters per other column gets one block per row instead (``name`` then ``column: value``
    lines), so no value is cut either.
    """
    from rich.measure import Measurement
    from rich.table import Table

    key_width = max([len(key), *(len(str(r[columns.index(key)])) for r in rows)])
    table = Table(title=title)
    for col in columns:
        if col == key:
            table.add_column(col, no_wrap=True, min_width=key_width)
        else:
            table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(escape(str(v)) for v in r))
    if not console.is_terminal:  # piped: a console as wide as the table (COLUMNS does not apply)
        natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
        Console(file=console.file, width=max(natural, console.width), color_system=None).print(table)
        return
    needed = key_width + 7 + 10 * (len(columns) - 1)  # borders, padding, ~8 characters per column
    if needed <= console.width:
        console.print(table)
        return
    console.print(title, style="bold", highlight=False)
    for r in rows:
        values = dict(zip(columns, (str(v) for v in r), strict=True))
        console.print(values[key], style="bold", highlight=False, soft_wrap=True, markup=False)
        for col in columns:
            if col != key:
                console.print(f"  {col}: {values[col]}", highlight=False, soft_wrap=True, markup=False)


def print_records(
    records: Sequence[dict[str, Any]],
    as_json: bool,
    title: str,
    columns: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[Any]],
) -> None:
    """Print ``records`` as JSON, or as a :func:`print_list` table of ``row(record)`` per record."""
    if as_json:
        print_json(records)
    else:
        print_list(title, columns, [row(r) for r in records])


def notes_to_stderr(update: Callable[[str], None]) -> Callable[[str], None]:
    """A progress callback: ``note:`` messages become lines on stderr, the rest go to ``update``."""

    def progress(msg: str) -> None:
        if msg.startswith("note:"):
            err_console.print(msg, highlight=False, soft_wrap=True, markup=False)
        else:
            update(msg)

    return progress


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
