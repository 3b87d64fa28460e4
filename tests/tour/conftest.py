"""One quick tour of the default model per test session, shared by the tour and browser tests."""

from __future__ import annotations

import pytest
from tests.tour.quick_tour import QuickTour, run_quick_tour


@pytest.fixture(scope="session")
def quick_tour(tmp_path_factory: pytest.TempPathFactory) -> QuickTour:
    """``lmbricks tour --quick`` on the default model, run once; several tests inspect its report."""
    return run_quick_tour(tmp_path_factory.mktemp("quick_tour") / "tour")
