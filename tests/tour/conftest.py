"""One quick tour of the default model per test run, shared by the tour, section and browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.once import once_per_run
from tests.tour.quick_tour import QuickTour, run_quick_tour


@pytest.fixture(scope="session")
def quick_tour(tmp_path_factory: pytest.TempPathFactory) -> QuickTour:
    """``lmbricks tour --quick`` on the default model, run once per test run; many tests inspect its report.

    The default-model test of each section reads that section's part of this tour rather than running
    it again (the sections' own tests on tiny models run them alone).
    """

    def run(folder: Path) -> dict[str, Any]:
        tour = run_quick_tour(folder / "tour")
        return {"out": str(tour.out), "exit_code": tour.exit_code, "output": tour.output}

    data = once_per_run(tmp_path_factory, "quick_tour", run)
    return QuickTour(Path(data["out"]), data["exit_code"], data["output"])
