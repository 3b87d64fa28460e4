"""The tour: sections run in order, the report opens with a summary and embeds its plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour

from lmbricks.tour import run_tour
from lmbricks.tour.sections import inventory_section


def test_inventory_section_on_tiny_model(tiny_llama: Path, tmp_path: Path) -> None:
    report = run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("inventory", inventory_section)])
    page = report.read_text()
    assert "Summary" in page and "Parameters by role" in page and "data:image/png;base64" in page
    results = json.loads((tmp_path / "results.json").read_text())
    inv = results["inventory"]
    assert inv["num_layers"] == 2 and inv["ffn_neurons_per_layer"] == [64, 64]
    assert "inventory" in results["timings_s"]


@pytest.mark.integration
def test_tour_quick_on_default_model(quick_tour: QuickTour) -> None:
    assert quick_tour.exit_code == 0, quick_tour.output
    page = (quick_tour.out / "report.html").read_text()
    assert "Inventory" in page and "Bits per byte by domain" in page
    results = json.loads((quick_tour.out / "results.json").read_text())
    assert set(results["bits_per_byte"]) == {"en_prose", "code", "math", "zh", "dialogue"}
