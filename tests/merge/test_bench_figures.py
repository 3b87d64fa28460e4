"""The benchmark table of docs/merging.md is the committed JSON of that run, figure for figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "merging.md"
RUN = ROOT / "docs" / "bench" / "merge-2026-11-23.json"


def _rows() -> dict[str, list[str]]:
    """Method -> the table's cells (first word of the first cell names the method)."""
    section = DOC.read_text(encoding="utf-8").split("### Benchmark figures", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] and not cells[0].startswith("-") and cells[1] != "lmbricks":
            rows[cells[0].split()[0].rstrip(",")] = cells
    return rows


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", re.sub(r"\(target[^)]*\)", "", cell))]


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_benchmark_table_equals_the_committed_run(method: str) -> None:
    run = json.loads(RUN.read_text())[method]
    cells = _rows()[method]
    expect = [
        [run["lmbricks_s"]],
        [run["mergekit_s"]],
        [run["floor_s"]],
        [run["vs_mergekit"]],
        [run["vs_floor"]],
        [run["lmbricks_anon_gb"], run["mergekit_anon_gb"]],
        [run["lmbricks_cpu_s"], run["mergekit_cpu_s"]],
    ]
    for cell, values in zip(cells[1:], expect, strict=True):
        shown = _numbers(cell)
        assert len(shown) == len(values), (cell, values)
        for x, v in zip(shown, values, strict=True):
            decimals = len(str(x).split(".")[1]) if "." in str(x) else 0
            assert abs(x - v) <= 10**-decimals / 2 + 1e-9, (method, cell, v)  # v rounded to the digits shown


def test_no_figure_without_its_run() -> None:
    """The section quotes only the committed run (#22: a second run's figures had no JSON behind them)."""
    section = DOC.read_text(encoding="utf-8").split("### Benchmark figures", 1)[1].split("\n## ", 1)[0]
    assert "second" not in section.lower()
    assert RUN.name in section
