"""Tour section ``moe``: dense vs top-2 vs Switch at equal active parameters, trained live and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.tour.moe import moe_section
from lmbricks.train.arms import ARMS


@pytest.mark.integration
def test_moe_section_quick_on_default_model(quick_tour: QuickTour, tmp_path: Path) -> None:
    from lmbricks.tour import run_tour

    assert "data:image/png;base64" in quick_tour.section_page("Dense vs mixture of experts")
    results = quick_tour.results()
    arms = results["moe"]["arms"]
    assert set(arms) == set(ARMS)
    assert set(arms["top2"]["expert_load"]["share"]) == {"en_prose", "code", "math", "zh", "dialogue"}
    assert (quick_tour.out / "moe_val_loss.png").exists() and (quick_tour.out / "moe_domain_load.png").exists()
    first = results["timings_s"]["moe"]
    # a second run (the section alone, on a copy of the tour's cache) reuses the cached comparison
    cached = [p.name for p in (quick_tour.out / "cache").glob("moe-compare-*.json")]
    logs: list[str] = []
    run_tour(quick_tour.copy_cache(tmp_path, *cached), quick=True, sections=[("moe", moe_section)], log=logs.append)
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["moe"] == results["moe"]
    assert "moe: reusing cached comparison" in logs
    assert again["timings_s"]["moe"] < first
