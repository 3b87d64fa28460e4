"""One quick tour of the default model per test run, shared by the tour and browser tests."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from tests.tour.quick_tour import QuickTour, run_quick_tour


@pytest.fixture(scope="session")
def quick_tour(tmp_path_factory: pytest.TempPathFactory) -> QuickTour:
    """``lmbricks tour --quick`` on the default model, run once; several tests inspect its report.

    Under pytest-xdist the first worker that needs it runs it under a file lock in the run's shared
    temporary directory and the others read its record (xdist's ``loadgroup`` cannot keep the tests on
    one worker with pytest 9.2, which ignores the renamed node ids it relies on).
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return run_quick_tour(tmp_path_factory.mktemp("quick_tour") / "tour")
    shared = tmp_path_factory.getbasetemp().parent / "quick_tour"  # common to this run's workers
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = shared / "result.json"
        if record.exists():
            data = json.loads(record.read_text())
            return QuickTour(Path(data["out"]), data["exit_code"], data["output"])
        tour = run_quick_tour(shared / "tour")
        record.write_text(json.dumps({"out": str(tour.out), "exit_code": tour.exit_code, "output": tour.output}))
        return tour
