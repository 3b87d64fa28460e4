"""docs/emergent-bricks.md's TEAL table equals its committed JSON (docs/bench/teal-2026-12-07.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.doc_tables import signed_percent, table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = DOCS / "bench" / "teal-2026-12-07.json"
HEADER = "| TEAL sparsity | perplexity change, mean |"
DOMAINS = ("en_prose", "code", "math", "zh", "dialogue")


def test_teal_table_equals_its_json() -> None:
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    assert "(bench/teal-2026-12-07.json)" in text
    res = json.loads(RUN.read_text())["results"]
    assert res["settings"]["method"] == "teal" and res["settings"]["keep"] == [0.75, 0.6, 0.5]
    rows = table_rows(text, HEADER)
    assert list(rows) == ["25%", "40%", "50%"]
    for name, keep in zip(rows, ("keep=0.75", "keep=0.6", "keep=0.5"), strict=True):
        change = res["ppl_change"][keep]
        want = [change["mean"], *(change[d] for d in DOMAINS)]
        assert [signed_percent(c) for c in rows[name]] == pytest.approx(want, abs=5e-4 + 1e-9), name
