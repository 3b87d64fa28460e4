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


def test_transplant_bits_per_byte_table_equals_its_json() -> None:
    run = json.loads((ROOT / "docs/bench/tokens-mean-zero-2026-12-07.json").read_text())
    doc = (ROOT / "docs/tokenizers.md").read_text()
    labels = {"SmolLM2, its own tokenizer": "model", "+ Qwen2.5's tokenizer, `mean`": "mean"}
    labels["+ Qwen2.5's tokenizer, `zero`"] = "zero"
    domains = ("en_prose", "code", "math", "zh", "dialogue")
    for label, key in labels.items():
        line = next(row for row in doc.splitlines() if row.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        for domain, cell in zip(domains, cells, strict=True):
            bpb, tokens = re.fullmatch(r"([\d.]+) \((\d+)\)", cell).groups()  # type: ignore[union-attr]
            assert float(bpb) == round(run["bpb"][key][domain]["bpb"], 3), (label, domain)
            assert int(tokens) == run["bpb"][key][domain]["tokens"], (label, domain)
    cpu = run["transplants"]
    assert f"Transplant time: {cpu['mean']['cpu_s']} / {cpu['zero']['cpu_s']} s CPU (mean / zero)." in doc
