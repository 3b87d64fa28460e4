"""docs/emergent-bricks.md's shared-experts table equals its committed JSON (docs/bench/moefy-shared-*.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.doc_tables import signed_percent, table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = DOCS / "bench" / "moefy-shared-2026-12-07.json"
HEADER = "| MoEfication of the ReLU-fied model | oracle, 16 of 32 active |"


def test_shared_experts_table_equals_its_json() -> None:
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    assert "(bench/moefy-shared-2026-12-07.json)" in text
    run = json.loads(RUN.read_text())
    assert run["shared_experts"] == 4 and run["active_experts"] == 16 and run["details"]["experts"] == 32
    assert run["ppl_change_router_shared"] == run["details"]["shared"]["router_16"]["change"]
    rows = table_rows(text, HEADER)
    assert list(rows) == ["no shared experts", "4 shared experts"]
    for name, arm in zip(rows, ("no_shared", "shared"), strict=True):
        points = run["details"][arm]
        want = [points[f"{mode}_{a}"]["change"] for a in (16, 8) for mode in ("oracle", "router")]
        assert [signed_percent(c) for c in rows[name]] == pytest.approx(want, abs=5e-4), name
