"""scripts/test_census.py: the rule classifies hand-written test functions as its docstring says."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test_census.py"

MODULE = """
import torch
import torch.multiprocessing as mp

def _worker(rank, world):
    assert got == want

def _quiet_worker(rank, world):
    assert got

def test_spawned_worker_compares(tmp_path):
    mp.spawn(_worker, args=(2,), nprocs=2)

def test_thread_target_compares():
    Thread(target=_worker).start()

def test_worker_that_only_checks_truth():
    mp.spawn(_quiet_worker, args=(2,), nprocs=2)

def test_gradcheck():
    assert torch.autograd.gradcheck(f, (x,))

def test_truthiness_only():
    assert out

def test_error_path():
    with pytest.raises(ValueError):
        f()

def test_length_only():
    assert len(out) == 3
"""


@pytest.fixture(scope="module")
def census() -> ModuleType:
    spec = importlib.util.spec_from_file_location("test_census", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["test_census"] = module
    spec.loader.exec_module(module)
    return module


def test_workers_and_gradcheck_count_as_value_checks(census: ModuleType) -> None:
    tree = ast.parse(MODULE)
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    got = {name: census.classify(fn, helpers) for name, fn in helpers.items() if name.startswith("test_")}
    assert got == {
        "test_spawned_worker_compares": "strong",
        "test_thread_target_compares": "strong",
        "test_worker_that_only_checks_truth": "smoke",
        "test_gradcheck": "strong",
        "test_truthiness_only": "smoke",
        "test_error_path": "error-path",
        "test_length_only": "smoke",
    }
