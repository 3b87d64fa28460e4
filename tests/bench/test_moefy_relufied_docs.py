"""docs/emergent-bricks.md's ReLU-fied MoEfication and masking tables equal their committed JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
MOEFY_RUN = DOCS / "bench" / "moefy-relufied-2026-12-07.json"
MASKING_RUN = DOCS / "bench" / "masking-relufied-2026-12-07.json"


def _rows(header: str) -> dict[str, list[str]]:
    """The cells of the table under ``header`` (its first row), keyed by the first cell without backticks."""
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    block = text[text.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    return {cells[0].strip("`"): cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in block)}


def _number(cell: str) -> float:
    """``+12.3%`` -> 0.123, ``2.41x`` -> 2.41, ``70.4%`` -> 0.704 (the cell's leading figure)."""
    m = re.match(r"\**([+-]?\d+(?:\.\d+)?)(%|x)", cell)
    assert m, cell
    return float(m.group(1)) / (100 if m.group(2) == "%" else 1)


def test_relufied_moefy_table_equals_its_json() -> None:
    run = json.loads(MOEFY_RUN.read_text())
    rows = _rows("| bench/moefy.py key | target |")
    keys = ["relufied_sparsity", "relufied_ppl_change", "ppl_change_50pct_healed_relufied"]
    keys += ["ppl_change_25pct_healed_relufied", "ffn_speedup_25pct_relufied"]
    assert list(rows) == keys
    for key in keys:
        tolerance = 5e-3 if key.startswith("ffn") else 5e-4  # the cells' rounding: 2 decimals, 0.1%
        assert _number(rows[key][1]) == pytest.approx(run[key], abs=tolerance), key


def test_relufied_per_k_table_equals_its_json() -> None:
    run = json.loads(MOEFY_RUN.read_text())["details_relufied"]
    speeds, vs_source, vs_relu = run["speeds"], run["ppl_change_vs_source"], run["ppl_change_vs_relufied"]
    rows = _rows("| K of 32 | FFN prefill, zero-skip off |")
    ks = [int(re.match(r"K=(\d+)", name).group(1)) for name in rows]  # type: ignore[union-attr]
    assert ks == [8, 16, 32]
    for k, (name, cells) in zip(ks, rows.items(), strict=True):
        want = [speeds[p][f"K={k}_speedup_{zs}"] for p in ("ffn_prefill", "ffn_decode") for zs in ("no_zs", "zs")]
        assert [_number(c) for c in cells[:4]] == pytest.approx(want, abs=5e-3), name
        if k == 32:
            continue
        for cell, mode in zip(cells[4:], ("oracle", "router", "healed"), strict=True):
            source, relu = (_number(part) for part in cell.split(" / "))
            assert source == pytest.approx(vs_source[f"{mode}_{k}"], abs=5e-4), (name, mode)
            assert relu == pytest.approx(vs_relu[f"{mode}_{k}"], abs=5e-4), (name, mode)


def test_masking_table_equals_its_json() -> None:
    run = json.loads(MASKING_RUN.read_text())
    rows = _rows("| model | exact zeros | masked 50% |")
    assert list(rows) == ["SwiGLU source", "ReLU-fied (FATReLU)"]
    for name, arm in zip(rows, ("source", "relufied"), strict=True):
        zeros, *masked = rows[name]
        assert _number(zeros) == pytest.approx(run[arm]["exact_zero_fraction"], abs=5e-4)
        assert [_number(c) for c in masked] == pytest.approx(
            [run[arm]["mean_change"][r] for r in ("0.5", "0.7", "0.8", "0.9")], abs=5e-4
        )
