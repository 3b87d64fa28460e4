"""docs/performance.md's per-test CPU figures with child processes are those of their committed run."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_child_process_figures_are_the_json() -> None:
    runs = json.loads((DOCS / "bench" / "suite-cpu-children-2026-12-07.json").read_text())["runs"]
    text = " ".join((DOCS / "performance.md").read_text().split())
    for run in runs.values():  # the totals are the per-test figures summed
        tests = run["per_test"].values()
        assert run["tests"] == len(run["per_test"])
        assert abs(run["total_cpu_s"] - sum(t["cpu_s"] for t in tests)) < 0.06
        assert abs(run["children_cpu_s"] - sum(t["children_cpu_s"] for t in tests)) < 0.06
    dist, rel, tour = runs["distributed"], runs["reliability"], runs["tour_tiny"]
    assert f"took **{dist['total_cpu_s']:.1f} CPU s** for its {dist['tests']} tests" in text
    assert f"{dist['children_cpu_s']:.1f} of them in child processes" in text
    assert f"({rel['tests']} tests, not integration) took {rel['total_cpu_s']:.1f} CPU s" in text
    assert f"{rel['children_cpu_s']:.1f} in child processes" in text
    fuzz = rel["per_test"]["tests/reliability/test_merge_fuzz.py::test_merge_recipes_fuzz"]["cpu_s"]
    assert f"the merge fuzz, in process, {fuzz:.1f}" in text
    assert f"the tour's {tour['tests']} tiny-model tests {tour['total_cpu_s']:.1f} CPU s" in text
