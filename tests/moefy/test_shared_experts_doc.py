"""docs/emergent-bricks.md's shared-experts table equals its committed JSON (docs/bench/moefy-shared-*.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.doc_tables import signed_percent, table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUNS = {4: DOCS / "bench" / "moefy-shared-2026-12-07.json", 1: DOCS / "bench" / "moefy-shared-s1-2026-12-07.json"}
HEADER = "| MoEfication of the ReLU-fied model | oracle, 16 of 32 active |"


def _cells(points: dict[str, dict[str, float]]) -> list[float]:
    """The row's four changes: oracle and router at 16, then at 8 active experts."""
    return [points[f"{mode}_{a}"]["change"] for a in (16, 8) for mode in ("oracle", "router")]


def test_shared_experts_table_equals_its_json() -> None:
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    runs = {s: json.loads(path.read_text()) for s, path in RUNS.items()}
    for s, run in runs.items():
        assert f"(bench/{RUNS[s].name})" in text
        assert run["shared_experts"] == s and run["active_experts"] == 16 and run["details"]["experts"] == 32
        assert run["ppl_change_router_shared"] == run["details"]["shared"]["router_16"]["change"]
    plain = _cells(runs[4]["details"]["no_shared"])
    assert _cells(runs[1]["details"]["no_shared"]) == pytest.approx(plain, abs=1e-9)  # the same arm, reproduced
    rows = table_rows(text, HEADER)
    want = {
        "no shared experts": plain,
        "1 shared expert": _cells(runs[1]["details"]["shared"]),
        "4 shared experts": _cells(runs[4]["details"]["shared"]),
    }
    assert list(rows) == list(want)
    for name, values in want.items():
        assert [signed_percent(c) for c in rows[name]] == pytest.approx(values, abs=5e-4), name
