"""docs/emergent-bricks.md's sparse pre-training table is the committed JSON, row for row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))


def test_docs_table_equals_the_committed_json() -> None:
    from sparse_pretrain_eval import table_rows

    summary = json.loads((ROOT / "docs" / "bench" / "sparse-pretrain-2026-12-07.json").read_text())
    text = (ROOT / "docs" / "emergent-bricks.md").read_text(encoding="utf-8")
    assert "(bench/sparse-pretrain-2026-12-07.json)" in text
    rows = table_rows(summary)
    assert len(rows) == 2 + len(summary["arms"])
    for row in rows:
        assert row in text.splitlines(), row
