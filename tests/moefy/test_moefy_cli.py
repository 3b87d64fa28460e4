"""``lmbricks moefy`` refuses bad arguments with one clear line, before loading anything."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lmbricks.cli.main import app


def test_moefy_bad_arguments(tiny_llama: Path, tiny_mixtral: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        ([str(tiny_llama), str(tmp_path / "a"), "-e", "5", "-k", "2"], "does not divide"),
        ([str(tiny_llama), str(tmp_path / "b"), "-e", "4", "-k", "8"], "top_k"),
        ([str(tiny_mixtral), str(tmp_path / "c"), "-e", "4", "-k", "2"], "not supported"),
        ([str(tiny_llama), str(tmp_path / "d"), "--split", "metis"], "split"),
        ([str(tiny_llama), str(tmp_path / "e"), "-e", "4", "-k", "2", "--shared-experts", "3"], "top_k"),
        ([str(tiny_llama), str(tmp_path / "f"), "-e", "4", "-k", "1", "--shared-experts", "4"], "shared_experts"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["moefy", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert not Path(args[1]).exists()


def test_help_has_examples() -> None:
    runner = CliRunner()
    for args in (["moefy", "--help"], ["analyze", "sparsity", "--help"], ["analyze", "neurons", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Example:" in result.output
