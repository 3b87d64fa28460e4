"""docs/alignment.md's over-optimisation tables are the committed JSON, row for row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

BENCH = "overoptimisation-2026-12-07.json"


def test_docs_tables_equal_the_committed_json() -> None:
    from overoptimisation import table_rows

    res = json.loads((ROOT / "docs" / "bench" / BENCH).read_text())
    text = (ROOT / "docs" / "alignment.md").read_text(encoding="utf-8")
    assert f"(bench/{BENCH})" in text
    rows = table_rows(res)
    assert len(rows) >= len(res["curves"]["single_mean"])
    lines = text.splitlines()
    for row in rows:
        assert row in lines, row
