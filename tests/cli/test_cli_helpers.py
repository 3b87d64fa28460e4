"""The shared CLI helpers: option factories, tables, note routing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lmbricks.cli.common import notes_to_stderr
from lmbricks.cli.options import FORCE_HELP, domains_option, force_option, json_option, model_argument, out_option
from lmbricks.cli.tables import print_columns, print_records, short_size


def test_shared_options_parse_like_typer_options(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.command()
    def cmd(
        model: str = model_argument("smollm2-135m-instruct"),
        out: Path = out_option(Path("runs/x")),
        domain: list[str] = domains_option(),
        force: bool = force_option(),
        as_json: bool = json_option(),
    ) -> None:
        typer.echo(json.dumps([model, str(out), domain, force, as_json]))

    runner = CliRunner()
    assert json.loads(runner.invoke(app, []).stdout) == ["smollm2-135m-instruct", "runs/x", None, False, False]
    got = runner.invoke(app, ["m", "-o", str(tmp_path), "-d", "a", "--domain", "b", "--force", "--json"])
    assert json.loads(got.stdout) == ["m", str(tmp_path), ["a", "b"], True, True]
    assert FORCE_HELP.split()[0] in runner.invoke(app, ["--help"]).stdout


def test_tables(capsys: pytest.CaptureFixture[str]) -> None:
    print_columns([["a", "long header"], ["value", "x"]])
    assert capsys.readouterr().out.splitlines() == ["a      long header", "value  x"]
    records = [{"name": "n1", "size": 2}]
    print_records(records, True, "T", ("name", "size"), lambda r: (r["name"], str(r["size"])))
    assert json.loads(capsys.readouterr().out) == records
    print_records(records, False, "T", ("name", "size"), lambda r: (r["name"], str(r["size"])))
    assert "n1" in capsys.readouterr().out
    assert (short_size(None), short_size(999), short_size(1234, "B"), short_size(2_500_000)) == (
        "-",
        "999",
        "1.2kB",
        "2.5M",
    )


def test_notes_go_to_stderr_the_rest_to_update(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []
    progress = notes_to_stderr(seen.append)
    progress("note: something to say")
    progress("step 1")
    assert seen == ["step 1"] and "note: something to say" in capsys.readouterr().err
