"""``lmbricks trace`` end to end on the biased tiny Mixtral: stored domains and text files together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmbricks.cli.main import app


def test_trace_cli_end_to_end(
    biased_mixtral: Path, domain_texts: dict[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmbricks.data import add_domain

    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    names = list(domain_texts)
    # two domains stored with the data API (one file per document), two given as text files
    for name in names[:2]:
        folder = tmp_path / name
        folder.mkdir()
        files = []
        for i, text in enumerate(domain_texts[name]):
            files.append(folder / f"{i}.txt")
            files[-1].write_text(text)
        add_domain(name, files, tokenizer=None)
    args = ["trace", str(biased_mixtral), "--split", "train", "--layer", "1", "--json"]
    for name in names[:2]:
        args += ["--domain", name]
    for name in names[2:]:
        f = tmp_path / f"{name}.txt"
        f.write_text("\n\n".join(domain_texts[name]))
        args += ["--texts", f"{name}={f}"]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert set(s["domains"]) == set(names) and s["colour_layer"] == 1
    for d in names:
        tokens = s["domains"][d]["tokens"]
        assert [sum(row) for row in s["histograms"][d]] == [2 * tokens, 2 * tokens]
    rows = {r["features"]: r["accuracy"] for r in s["topic"]}
    assert rows["all layers"] >= 0.95
    html = (out / "report.html").read_text()
    for title in (
        "Expert selection by domain",
        "Consecutive tokens",
        "Token colouring",
        "Topic from routing",
    ):
        assert title in html
    assert html.count("data:image/png;base64,") >= 4 and 'class="tok"' in html
    assert json.loads((out / "trace.json").read_text())["tokens"] == s["tokens"]
    # an existing output is refused without --force, with one red line
    again = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    bad = CliRunner().invoke(app, ["trace", str(biased_mixtral), "--texts", "nofile"])
    assert bad.exit_code == 2 and "DOMAIN=PATH" in bad.output
