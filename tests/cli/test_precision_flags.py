"""Every command with a model pass takes ``--precision auto|bf16|fp32`` and refuses anything else before work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmbricks.cli.main import app

COMMANDS = [
    ["analyze", "sparsity", "{model}", "--out", "{out}"],
    ["analyze", "neurons", "{model}", "--out", "{out}"],
    ["moefy", "{model}", "{out}", "-e", "4", "-k", "2"],
    ["reward", "train", "{model}", "builtin:dialogue", "{out}"],
    ["proxy", "generate", "hello", "--base", "{model}"],
    ["eval", "ppl", "{model}"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_bad_precision_is_refused_and_nothing_is_written(args: list[str], tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [a.format(model=tiny_llama, out=out) for a in args]
    result = CliRunner().invoke(app, [*argv, "--precision", "fp16"])
    assert result.exit_code == 2, result.output
    assert "fp16" in result.output and "--precision" in result.output
    assert not out.exists()


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_help_names_the_precision_option(args: list[str]) -> None:
    groups = {"analyze", "reward", "proxy", "eval"}
    command = args[:2] if args[0] in groups else args[:1]
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "--precision" in result.output
