"""The figures of docs/merging.md's "Evolutionary search" section equal the committed JSON of that run."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "merging.md"
RUN = ROOT / "docs" / "bench" / "evolve-2026-12-07.json"


def _rows() -> dict[str, list[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### Measured on the default model") : text.index("### Spreading the fitness text")]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    rows = {}
    for line in lines:
        cells = [c.replace("*", "").strip() for c in line.strip("|").split("|")]
        rows[cells[0].split(" (")[0]] = cells[1:]
    return rows


def test_the_table_is_the_run() -> None:
    run = json.loads(RUN.read_text(encoding="utf-8"))
    rows = _rows()
    names = {"base model, no brick": "base model", "w=1/2 d=0.7": "start", "evolved": "evolved",
             "w=1/2 d=0.5": "w=1/2 d=0.5", "w=1/2 d=0.9": "w=1/2 d=0.9"}  # fmt: skip
    for row, key in names.items():
        cells = rows[row]
        assert float(cells[0]) == round(run["validation"][key]["loss"], 5), row
        assert float(cells[1]) == round(run["test"][key]["loss"], 5), row
        assert float(cells[2]) == round(run["test"][key]["bpb"]["code"], 4), row
        assert float(cells[3]) == round(run["test"][key]["bpb"]["math"], 4), row
    ones = rows["w=1 d=0.5 / 0.7 / 0.9"]
    assert [float(x) for x in ones[1].split(" / ")] == [
        round(run["test"][f"w=1 d={d}"]["loss"], 5) for d in (0.5, 0.7, 0.9)
    ]
    text = DOC.read_text(encoding="utf-8")
    assert f"{run['timings']['evaluations_per_hour']:.0f} evaluations per hour" in text
    assert f"{100 * run['timings']['merge_share']:.0f}% of each candidate's time is merging" in text
    assert f"{run['evaluations']} candidates" in text
    best = run["best"]["values"]
    weights = re.search(r"\(w ([\d.]+) / ([\d.]+), d ([\d.]+) / ([\d.]+)\)", text)
    assert weights is not None
    assert [float(x) for x in weights.groups()] == [
        round(best[k], 3) for k in ("models[0].weight", "models[1].weight", "models[0].density", "models[1].density")
    ]


def test_the_documents_table_is_its_run() -> None:
    """docs/merging.md's "Spreading the fitness text" table equals docs/bench/evolve-documents-2026-12-07.json."""
    run = json.loads((ROOT / "docs" / "bench" / "evolve-documents-2026-12-07.json").read_text(encoding="utf-8"))
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### Spreading the fitness text") :]
    section = section[: section.index("\n## ")]
    rows = {}
    for line in [line for line in section.splitlines() if line.startswith("| ")][1:]:
        cells = [c.replace("*", "").strip() for c in line.strip("|").split("|")]
        rows[cells[0].split(" (")[0]] = cells[1:]
    names = {"base model, no brick": "base model", "w=1/2 d=0.7": "start", "evolved": "evolved",
             "w=1/2 d=0.5": "w=1/2 d=0.5", "w=1/2 d=0.9": "w=1/2 d=0.9", "w=1 d=0.7": "w=1 d=0.7"}  # fmt: skip
    for row, key in names.items():
        cells = rows[row]
        assert float(cells[0]) == round(run["validation"][key]["loss"], 5), row
        assert float(cells[1]) == round(run["test"][key]["loss"], 5), row
        assert float(cells[2]) == round(run["test"][key]["bpb"]["code"], 4), row
        assert float(cells[3]) == round(run["test"][key]["bpb"]["math"], 4), row
    assert run["config"]["fitness"]["documents"] == 6 and f"{run['evaluations']} candidates" in section
    assert f"{run['timings']['evaluations_per_hour']:.0f} evaluations per hour" in section
    assert f"{100 * run['timings']['merge_share']:.0f}% of a\ncandidate's time merging" in section
