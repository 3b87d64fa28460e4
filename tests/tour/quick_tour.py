"""What ``lmbricks tour --quick --out DIR`` left behind (the shared fixture's value)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QuickTour:
    """The output directory, exit code and console output of one quick tour."""

    out: Path
    exit_code: int
    output: str


def run_quick_tour(out: Path) -> QuickTour:
    """Run the command a user runs, in process."""
    from typer.testing import CliRunner

    from lmbricks.cli.main import app

    result = CliRunner().invoke(app, ["tour", "--quick", "--out", str(out)])
    return QuickTour(out, result.exit_code, result.output)
