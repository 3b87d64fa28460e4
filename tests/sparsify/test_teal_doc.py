"""docs/emergent-bricks.md's TEAL tables equal their committed JSON (quality: teal-2026-12-07.json, speed:
teal-decode-2026-12-07.json, the same thresholds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.doc_tables import signed_percent, table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = DOCS / "bench" / "teal-2026-12-07.json"
SPEED = DOCS / "bench" / "teal-decode-2026-12-07.json"
HEADER = "| TEAL sparsity | perplexity change, mean |"
SPEED_HEADER = "| arm | bf16 ms/token | bf16 speedup |"
DOMAINS = ("en_prose", "code", "math", "zh", "dialogue")
KEEPS = ("keep=0.75", "keep=0.6", "keep=0.5")


def _x(cell: str) -> float:
    assert cell.endswith("x"), cell
    return float(cell[:-1])


def _text() -> str:
    return (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")


def test_teal_table_equals_its_json() -> None:
    text = _text()
    assert "(bench/teal-2026-12-07.json)" in text
    res = json.loads(RUN.read_text())["results"]
    speed = json.loads(SPEED.read_text())["results"]
    assert res["settings"]["method"] == "teal" and res["settings"]["keep"] == [0.75, 0.6, 0.5]
    rows = table_rows(text, HEADER)
    assert list(rows) == ["25%", "40%", "50%"]
    for name, keep in zip(rows, KEEPS, strict=True):
        change = res["ppl_change"][keep]
        want = [change["mean"], *(change[d] for d in DOMAINS)]
        assert [signed_percent(c) for c in rows[name][:6]] == pytest.approx(want, abs=5e-4 + 1e-9), name
        assert _x(rows[name][6]) == pytest.approx(speed["bf16"][keep]["speedup"], abs=0.005 + 1e-9), name
        paper = speed["paper_speedup"].get(keep)
        assert (rows[name][7] == "") if paper is None else (_x(rows[name][7]) == paper), name


def test_teal_speed_table_equals_its_json() -> None:
    text = _text()
    assert "(bench/teal-decode-2026-12-07.json)" in text
    data = json.loads(SPEED.read_text())
    assert "--thresholds docs/bench/teal-2026-12-07.json" in data["command"]
    speed = data["results"]
    # the quality run's thresholds are the ones timed: the speed JSON carries its quality figures
    quality = json.loads(RUN.read_text())["results"]["ppl_change"]
    assert all(speed["bf16"][k]["ppl_change_mean"] == quality[k]["mean"] for k in KEEPS)
    arms = {"dense": "dense", "masks, 50%": "masked keep=0.5", "kernel, 0%": "keep=1"}
    arms |= {"kernel, 25%": "keep=0.75", "kernel, 40%": "keep=0.6", "kernel, 50%": "keep=0.5"}
    rows = table_rows(text, SPEED_HEADER)
    assert list(rows) == list(arms)
    for name, arm in arms.items():
        bf, fp = speed["bf16"][arm], speed["fp32"][arm]
        cells = rows[name]
        assert float(cells[0]) == pytest.approx(bf["step_ms"], abs=0.05 + 1e-9), name
        assert _x(cells[1]) == pytest.approx(bf["speedup"], abs=0.005 + 1e-9), name
        assert float(cells[2]) == pytest.approx(fp["step_ms"], abs=0.05 + 1e-9), name
        assert _x(cells[3]) == pytest.approx(fp["speedup"], abs=0.005 + 1e-9), name
        assert float(cells[4].rstrip("%")) / 100 == pytest.approx(bf["decode_sparsity"], abs=5e-4 + 1e-9), name
        assert _x(cells[5]) == pytest.approx(bf["vs_floor"], abs=0.005 + 1e-9), name
        paper = speed["paper_speedup"].get(arm)
        assert (cells[6] == "") if paper is None else (_x(cells[6]) == paper), name


def test_teal_greedy_table_equals_its_json() -> None:
    text = _text()
    assert "(bench/teal-greedy-2026-12-07.json)" in text
    res = json.loads((DOCS / "bench" / "teal-greedy-2026-12-07.json").read_text())["results"]
    uniform = json.loads(RUN.read_text())["results"]
    assert res["settings"]["allocation"] == "greedy" and res["settings"]["keep"] == [0.75, 0.6, 0.5]
    same = ("sequences", "prompt_tokens", "continuation_tokens", "calibration_tokens", "domains")
    assert all(res["settings"][k] == uniform["settings"][k] for k in same)
    rows = table_rows(text, "| TEAL sparsity, greedy | perplexity change, mean |")
    assert list(rows) == ["25%", "40%", "50%"]
    for name, keep in zip(rows, KEEPS, strict=True):
        change = res["ppl_change"][keep]
        want = [change["mean"], *(change[d] for d in DOMAINS), uniform["ppl_change"][keep]["mean"]]
        assert [signed_percent(c) for c in rows[name]] == pytest.approx(want, abs=5e-4 + 1e-9), name
