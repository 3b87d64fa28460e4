"""The training-free table of docs/emergent-bricks.md equals its committed JSON (docs/bench/training-free-*.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.doc_tables import table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = DOCS / "bench" / "training-free-2026-12-07.json"
HEADER = "| method | paper's figure | perplexity, 50% kept |"


def _rows(text: str) -> dict[str, list[str]]:
    return table_rows(text, HEADER, strip="*`")


def _percent(cell: str) -> float:
    m = re.match(r"\**([+-]?\d+(?:\.\d+)?)%", cell)
    assert m, cell
    return float(m.group(1)) / 100


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", cell.split("(")[0])]


def test_training_free_table_equals_its_json() -> None:
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    assert "(bench/training-free-2026-12-07.json)" in text
    run = json.loads(RUN.read_text())
    rows = _rows(text)
    arms = {
        "griffin": "griffin",
        "cats": "cats",
        "cmoe": "cmoe",
        "cmoe_linear": "cmoe, linear router",
        "cmoe_oracle": "cmoe, oracle routing",
    }
    assert set(rows) == {*arms.values(), "coactivation moefy, healed 8 min (baseline)"}
    for key, row in arms.items():
        res, cells, method = run[key], rows[row], row.split(",")[0]
        assert res["settings"]["method"] == method and res["settings"]["oracle"] == ("oracle" in row)
        assert res["settings"]["router"] == ("linear" if "linear" in row else "analytic")
        for cell, keep in ((cells[1], "keep=0.5"), (cells[2], "keep=0.25")):
            # percentages are quoted to whole percent: within 0.005
            assert _percent(cell) == pytest.approx(res["ppl_change"][keep]["mean"], abs=0.005 + 1e-9), (method, cell)
        names = ("dense", "keep=0.5", "keep=0.25")
        if res["decode_tok_s"]:
            assert _numbers(cells[3]) == pytest.approx([res["decode_tok_s"][a] for a in names], abs=0.05 + 1e-9)
            assert _numbers(cells[4]) == pytest.approx([res["ffn_decode_ms"][a] for a in names], abs=0.0005 + 1e-9)
        else:
            assert cells[3] == cells[4] == "-"
    base = json.loads((DOCS / "bench" / "moefy-session4-2026-11-23.json").read_text())
    cells = rows["coactivation moefy, healed 8 min (baseline)"]
    assert _percent(cells[1]) == pytest.approx(base["ppl_change_50pct_healed"], abs=0.005)
    assert _percent(cells[2]) == pytest.approx(base["ppl_change_25pct_healed"], abs=0.005)
