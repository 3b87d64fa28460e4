"""Tables on stdout: lists whose names are never cut, records as JSON or a table, plain aligned columns."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout, nothing else (so it can be piped)."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=False))


def print_list(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: str = "name") -> None:
    """Print a list as a table whose ``key`` column (the names users type) is never cut or wrapped.

    Piped output gets the table at its natural width. A terminal too narrow for the names plus a
    few characters per other column gets one block per row instead (``name`` then ``column: value``
    lines), so no value is cut either.
    """
    from rich.measure import Measurement
    from rich.table import Table

    from lmbricks.cli.common import console  # (imported here: common re-exports this module's names)

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


def print_columns(rows: Sequence[Sequence[str]]) -> None:
    """Plain left-aligned columns (the first row is the header), never truncated or folded: for names
    and versions users copy."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def short_size(n: int | None, unit: str = "") -> str:
    """``1234567`` -> ``1.2M`` (``unit`` appended: ``1.2MB``); ``-`` for None."""
    if n is None:
        return "-"
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n}{unit}"
