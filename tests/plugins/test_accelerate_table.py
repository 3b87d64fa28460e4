"""docs/plugins.md's acceleration tables are the committed JSONs', row for row, and the target rows quote them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmbricks.plugins.accelerate.tables import bpb_table, curve_table, fewshot_table

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


def _json(pattern: str) -> dict:
    found = re.findall(pattern, TEXT)
    assert len(found) == 1, pattern
    return json.loads((ROOT / found[0]).read_text())


def _appears(lines: list[str]) -> None:
    start = TEXT.index(lines[0])
    assert TEXT[start:].splitlines()[: len(lines)] == lines  # every row, character for character


def test_bpb_and_curve_tables_equal_the_json() -> None:
    result = _json(
        r"### Measured on the default model, weighted distillation \(`(docs/bench/accelerate-[^`]*\.json)`\)"
    )
    _appears(bpb_table(result))
    _appears(curve_table(result["curves"]))
    for row in result["rows"]:  # the figures are the bricks': their steps and weights come from their records
        assert row["steps"] >= 1 and 0 <= row["prefix_weight"] <= 1


def test_fewshot_table_equals_the_json() -> None:
    result = _json(r"### Few-shot accuracy \(`(docs/bench/accelerate-fewshot[^`]*\.json)`\)")
    _appears(fewshot_table(result))
    for run in result["runs"]:
        plain = [item["plain"]["correct"] for item in run["items"]]
        for c in run["conditions"]:  # the counts are the items' outcomes
            got = [item[c["condition"]]["correct"] for item in run["items"]]
            assert c["correct"] == sum(got) and c["n"] == len(got)
            assert c["gained_vs_plain"] == sum(g and not p for g, p in zip(got, plain, strict=True))


def test_target_rows_quote_the_r2_brick() -> None:
    result = _json(
        r"### Measured on the default model, weighted distillation \(`(docs/bench/accelerate-[^`]*\.json)`\)"
    )
    r2 = next(row for row in result["rows"] if row["ratio"] == 2)
    time_row = next(line for line in TEXT.splitlines() if line.startswith("| accelerate (Variator) | >= 35%"))
    assert f"{r2['prefill_cpu_saved']:.0%} (CPU time), {r2['prefill_flops_saved']:.0%} (FLOPs)" in time_row
    bpb_row = next(line for line in TEXT.splitlines() if line.startswith("| accelerate (Variator) | <= 5%"))
    change = r2["bpb_mean"]["plugin"] / r2["bpb_mean"]["plain"] - 1
    assert f"{change:+.1%} after {r2['steps']} distillation steps" in bpb_row
    assert bpb_row.rstrip(" |").endswith("not met") == (change > 0.05)
