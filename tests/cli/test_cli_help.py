"""The CLI: --version, and --help with an example on every command."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from lmbricks import __version__
from lmbricks.cli.main import app

runner = CliRunner()


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # Typer may vendor its own click, so groups are recognised by their `commands` mapping.
    found: list[tuple[str, ...]] = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        if hasattr(cmd, "commands"):
            found.extend(_commands(cmd, path))
        else:
            found.append(path)
    return found


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_every_command_has_help_with_example() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert ("models", "fetch") in commands and ("eval", "ppl") in commands and ("tour",) in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example" in result.output, f"lmbricks {' '.join(path)} --help has no example"


def test_user_error_is_one_line_and_exit_2() -> None:
    result = runner.invoke(app, ["models", "fetch", "no-such-model"])
    assert result.exit_code == 2
    assert "unknown model name" in result.output and "Traceback" not in result.output
