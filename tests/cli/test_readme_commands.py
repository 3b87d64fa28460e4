"""README's command table: one row per command, and every command it names exists in the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from lmbricks.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _command_cells() -> list[str]:
    """The first cell of every row of README's command table, without the backticks."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("| `lmbricks ")]
    return [line.split("|")[1].strip().strip("`") for line in rows]


def _paths(cell: str) -> list[tuple[str, ...]]:
    """Command paths a cell names: ``lmbricks moe upcycle / grow MODEL`` -> (moe, upcycle), (moe, grow)."""
    words = cell.split()[1:]
    stem: list[str] = []
    paths: list[tuple[str, ...]] = []
    for i, word in enumerate(words):
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            if word == "/":
                continue
            break
        if i > 0 and words[i - 1] == "/":
            paths.append((*stem[:-1], word))
        else:
            stem.append(word)
    return [tuple(stem), *paths]


def test_readme_command_rows_are_unique() -> None:
    cells = _command_cells()
    assert len(cells) > 20
    # a union-resolved merge once left two rows for `train` and two for `plan`
    assert len(cells) == len(set(cells)), sorted(c for c in cells if cells.count(c) > 1)


def _known(group: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command path of the CLI, groups included (typer may vendor click: walk ``commands``)."""
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        found.add((*prefix, name))
        if hasattr(command, "commands"):
            found |= _known(command, (*prefix, name))
    return found


def test_every_command_the_readme_names_exists() -> None:
    known = _known(typer.main.get_command(app))
    assert ("merge", "multi") in known and ("moe", "grow") in known
    for cell in _command_cells():
        for path in _paths(cell):
            assert path in known, f"README names `lmbricks {' '.join(path)}`, which the CLI lacks"


def test_the_path_parser_reads_alternatives() -> None:
    assert _paths("lmbricks moe upcycle / assemble / grow") == [
        ("moe", "upcycle"),
        ("moe", "assemble"),
        ("moe", "grow"),
    ]
    assert _paths("lmbricks merge RECIPE.yaml OUT") == [("merge",)]
    assert _paths("lmbricks clean [DIR...]") == [("clean",)]
