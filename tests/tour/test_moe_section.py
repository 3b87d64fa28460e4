"""Tour section ``moe``: dense vs top-2 vs Switch at equal active parameters, trained live and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbricks.tour.moe import moe_section
from lmbricks.train.arms import ARMS


@pytest.mark.integration
def test_moe_section_quick_on_default_model(tmp_path: Path) -> None:
    from lmbricks.tour import run_tour

    logs: list[str] = []
    report = run_tour(tmp_path, quick=True, sections=[("moe", moe_section)], log=logs.append)
    page = report.read_text()
    assert "Dense vs mixture of experts" in page and "data:image/png;base64" in page
    results = json.loads((tmp_path / "results.json").read_text())
    arms = results["moe"]["arms"]
    assert set(arms) == set(ARMS)
    assert set(arms["top2"]["expert_load"]["share"]) == {"en_prose", "code", "math", "zh", "dialogue"}
    assert (tmp_path / "moe_val_loss.png").exists() and (tmp_path / "moe_domain_load.png").exists()
    first = results["timings_s"]["moe"]
    # a second run reuses the cached comparison instead of training again
    run_tour(tmp_path, quick=True, sections=[("moe", moe_section)], log=logs.append)
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["moe"] == results["moe"]
    assert "moe: reusing cached comparison" in logs
    assert again["timings_s"]["moe"] < first
