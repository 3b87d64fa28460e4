"""The ``lmbricks`` entry keeps large buffers in the heap before any command runs, and says so in --help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lmbricks.cli import main as cli_main
from lmbricks.runtime import ENV_VAR, AllocatorTuning

runner = CliRunner()


def test_entry_tunes_the_process_before_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake() -> AllocatorTuning:
        calls.append("tuned")
        return AllocatorTuning(True, "glibc", "test")

    monkeypatch.setattr(cli_main, "tune_process", fake)
    result = runner.invoke(cli_main.app, ["clean", "--help"])
    assert result.exit_code == 0 and calls == ["tuned"]


def test_help_names_the_opt_out() -> None:
    result = runner.invoke(cli_main.app, ["--help"])
    assert result.exit_code == 0 and ENV_VAR in result.output and "docs/performance.md" in result.output
