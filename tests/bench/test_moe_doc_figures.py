"""docs/moe.md's decode table equals the committed JSON of the two runs behind it (docs/bench/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _rows(text: str, header: str) -> dict[str, list[str]]:
    """``{first cell: other cells}`` of the Markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_moe_decode_table_equals_its_json() -> None:
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    before = json.loads((DOCS / "bench" / "moe-decode-before-2026-12-07.json").read_text())
    after = json.loads((DOCS / "bench" / "moe-decode-2026-12-07.json").read_text())
    rows = _rows(text, "| key | before (plain weights) | packed |")
    assert set(rows) == {"decode_vs_floor", "decode_vs_hf_grouped", "decode_vs_hf", "decode_vs_dense"}
    for key, (old, new, _target) in rows.items():
        assert float(old) == pytest.approx(before[key], abs=0.005 + 1e-9), (key, old)
        assert float(new) == pytest.approx(after[key], abs=0.005 + 1e-9), (key, new)
    for run in (before, after):  # like with like: the same benchmark, precision and clock
        assert run["precision"] == "bf16" and run["clock"] == "cpu" and run["threads"] == 1
        assert run["layer_rounds"]["processes_per_case"] == 3
    ms = after["median_ms"]["decode"], before["median_ms"]["decode"]
    assert f"from {ms[1]['ours']:.2f} to {ms[0]['ours']:.2f} CPU ms" in text


def test_moe_layout_table_equals_its_json() -> None:
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    run = json.loads((DOCS / "bench" / "moe-layouts-2026-12-07.json").read_text())
    rows = _rows(text, "| product | (K, N) `mm` |")
    layouts = ("kn_mm", "nk_linear", "nk_matmul_t", "packed")
    assert len(rows) == 4
    for label, cells in rows.items():
        dtype, projection = label.split()[:2]
        for layout, cell in zip(layouts, cells, strict=True):
            assert [float(v) for v in cell.split(" / ")] == run[dtype][projection][layout], (label, layout)
    packed, plain = run["bf16"]["gate_up"]["packed"], run["bf16"]["gate_up"]["kn_mm"]
    assert all(p < q for p, q in zip(packed, plain, strict=True))  # what the doc's choice rests on


def test_moe_forward_table_equals_its_json() -> None:
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    before = json.loads((DOCS / "bench" / "moe-fwd-before-2026-12-07.json").read_text())
    after = json.loads((DOCS / "bench" / "moe-fwd-2026-12-07.json").read_text())
    rows = _rows(text, "| key | before | packed | target (#15) |")
    assert set(rows) == {"fwd_vs_dense", "fwd_vs_hf", "fwd_mfu"}
    for key, (old, new, _target) in rows.items():
        assert float(old) == pytest.approx(before[key], abs=0.005 + 1e-9), (key, old)
        assert float(new) == pytest.approx(after[key], abs=0.005 + 1e-9), (key, new)
    old_ms, new_ms = before["median_ms"]["fwd"]["ours"], after["median_ms"]["fwd"]["ours"]
    assert f"ours {old_ms:.1f} -> {new_ms:.1f} CPU ms" in text
