"""``lmbricks data`` commands on a temporary cache (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmbricks.cli.data import app


@pytest.mark.usefixtures("tmp_home")
def test_add_list_show(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("lmbricks.data.build.default_tokenizer", lambda: (None, "no tokenizer in unit tests"))
    files = []
    for i in range(6):
        path = tmp_path / f"f{i}.txt"
        path.write_text(f"Text number {i}. " * 30, encoding="utf-8")
        files.append(str(path))
    runner = CliRunner()
    res = runner.invoke(app, ["add", "mine", *files])
    assert res.exit_code == 0, res.output
    assert "mine ready" in res.output
    res = runner.invoke(app, ["add", "mine", *files])
    assert res.exit_code == 2 and "already cached" in res.output
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "mine" in res.output and "en_prose" in res.output
    res = runner.invoke(app, ["show", "mine", "--split", "train", "--chars", "12"])
    assert res.exit_code == 0 and res.output.strip() == "Text number "[:12].strip()
    res = runner.invoke(app, ["fetch", "nope"])
    assert res.exit_code == 2 and "unknown domain" in res.output
