"""docs/tokenizers.md's OMP speed table is the committed run's JSON, figure for figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_omp_screen_table_equals_its_json() -> None:
    run = json.loads((ROOT / "docs/bench/omp-screen-2026-12-07.json").read_text())
    doc = (ROOT / "docs/tokenizers.md").read_text()
    rows = {
        m[0]: m[1:] for m in re.findall(r"^\| (exact fp32|bf16 screen)[^|]*\| \**([\d.]+)\** \| ([\d.]+) \|", doc, re.M)
    }
    assert rows["exact fp32"] == (f"{run['exact']['cpu_s']:.2f}", f"{run['exact']['mean_relative_residual']:.6f}")
    assert rows["bf16 screen"] == (
        f"{run['screened']['cpu_s']:.2f}",
        f"{run['screened']['mean_relative_residual']:.6f}",
    )
    assert "100% (every step, every token)" in doc
    assert min(run["same_pick_by_step"]) == 1.0 and run["shared_atoms"] == 1.0
