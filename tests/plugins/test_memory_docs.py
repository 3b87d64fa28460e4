"""docs/plugins.md's InfLLM cost tables equal the committed JSON of the runs behind them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.doc_tables import table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _doc() -> str:
    return (DOCS / "plugins.md").read_text(encoding="utf-8")


def _json(name: str) -> dict:
    return json.loads((DOCS / "bench" / name).read_text(encoding="utf-8"))


def test_attention_variants_table_equals_its_json() -> None:
    run = _json("memory-attention-2026-12-07.json")["ms_median"]
    rows = table_rows(_doc(), "| variant | CPU ms per layer and chunk |")
    keys = {
        "attention in bf16, boolean mask (the call before this round)": "attention_bf16_bool_mask",
        "attention in fp32, boolean mask": "attention_fp32_bool_mask",
        "attention in fp32, additive mask (the call now)": "attention_fp32_additive_mask",
        "attention in fp32, no mask (a lower bound, not a correct attention)": "attention_fp32_no_mask",
        "one layer's projections, bf16 weights": "projections_bf16",
        "one layer's projections, fp32 weights": "projections_fp32",
    }
    assert set(rows) == set(keys)
    for row, key in keys.items():
        assert int(rows[row][0]) == round(run[key]), row
    prose = " ".join(_doc().split())
    ratio = _json("memory-attention-2026-12-07.json")
    assert f"an additive mask**: {ratio['fp32_additive_vs_bf16_bool']:.2f}x the old call" in prose
    assert f"make the projections {ratio['projections_fp32_vs_bf16']:.2f}x" in prose


def test_prefill_before_after_table_equals_its_json() -> None:
    run = _json("memory-prefill-2026-12-07.json")["lengths"]
    rows = table_rows(_doc(), "| tokens | before: CPU s per 1k tokens |")
    assert set(rows) == set(run)
    for tokens, cells in rows.items():
        got = run[tokens]
        before, after = got["before"], got["after"]
        assert float(cells[0]) == round(before["prefill_cpu_s_per_1k"], 2), tokens
        assert float(cells[1]) == round(after["prefill_cpu_s_per_1k"], 2), tokens
        assert float(cells[2]) == round(got["after_vs_before"], 2), tokens
        assert cells[3] == ("yes" if got["same_tokens"] else "no"), tokens
        assert int(cells[4]) == round(before["per_token_cpu_ms"]) and int(cells[5]) == round(after["per_token_cpu_ms"])


def test_64k_trials_table_equals_its_json() -> None:
    run = _json("passkey-64k-2026-12-07.json")["trials"]
    rows = table_rows(_doc(), "| tokens | depth | key | answer (start) | correct | prefill CPU s |")
    assert len(rows) == 1 and len(run) >= 1  # the committed JSON's first trial
    t = run[0]
    cells = rows[str(t["length"])]
    assert cells[0] == f"{t['depth']:.0%}" and cells[1] == t["key"]
    assert cells[3] == ("yes" if t["correct"] else "no")
    assert int(cells[4]) == round(t["prefill_cpu_s"]) and int(cells[6]) == round(1000 * t["per_token_cpu_s"])
