"""Computations the suite needs once per test run, shared by every test (and every xdist worker) that reads them.

The default model's quick tour and its fp32 bits per byte take minutes; several tests inspect each.
A session fixture alone runs once per xdist worker (twice under ``make test``), and xdist's
``loadgroup`` cannot keep such tests on one worker with pytest 9.2 (it ignores the renamed node ids
it relies on). :func:`once_per_run` runs the computation in the first process that asks, under a
file lock in the run's shared temporary directory, and gives the others its JSON record.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """``compute(folder)``'s record, computed once per test run whatever the number of workers.

    Args:
        tmp_path_factory: pytest's session factory (its base folder locates the run's shared folder).
        name: the computation's name (its folder under the shared one).
        compute: writes what it needs under the folder it is given and returns a JSON-serialisable record.

    Returns:
        The record, as the first caller's ``compute`` returned it (read back from JSON by the others).
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return compute(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent / name  # common to this run's workers
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = shared / "record.json"
        if record.exists():
            data: dict[str, Any] = json.loads(record.read_text())
            return data
        data = compute(shared)
        record.write_text(json.dumps(data))
        return data
