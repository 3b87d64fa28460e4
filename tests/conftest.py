"""Shared fixtures: tiny random Llama and Mixtral checkpoints built on the fly (no network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import lmbricks
from lmbricks.testing import save_tiny_model, tiny_llama_config, tiny_mixtral_config

lmbricks.tune_process()  # the test process keeps large buffers in the heap, as every lmbricks process does


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 (pytest's hook signature)
    """Under pytest-xdist, each worker gets its share of the cores: N workers x the default thread count
    oversubscribe the CPU, and OpenMP's spinning barriers then ran the integration tests ~10x slower."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


#: Fixtures computed once per test run (tests/once.py) that take minutes: the quick tour, the fp32 scores.
ONCE_PER_RUN = ("quick_tour", "fp32_scores")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the first test of each once-per-run fixture first and its other tests last.

    Under pytest-xdist a worker that needs the result while another computes it waits on the lock
    (the browser test waited 300 s): the first test starts the computation at once on one worker while
    the other runs the rest of the suite, and the tests that only read the result come at the end.
    """
    first: set[str] = set()

    def rank(item: pytest.Item) -> int:
        used = [f for f in ONCE_PER_RUN if f in getattr(item, "fixturenames", ())]
        if not used:
            return 1
        if used[0] not in first:
            first.add(used[0])
            return 0
        return 2

    ranks = {id(item): rank(item) for item in items}
    items.sort(key=lambda item: ranks[id(item)])  # stable: the order within each group is kept


#: Per test (setup to teardown): its process's CPU seconds, those of the child processes it waited for
#: (torchrun ranks, CLI and mergekit subprocesses: they load the same cores), and wall seconds. Written
#: when LMBRICKS_TEST_CPU_JSON names a file.
_CPU_SECONDS: dict[str, dict[str, float]] = {}


def _clocks() -> tuple[float, float, float]:
    """(own CPU, reaped children's CPU, wall) seconds of this process so far."""
    import os
    import time

    t = os.times()
    return t.user + t.system, t.children_user + t.children_system, time.perf_counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Time each test on the CPU clocks (steadier than the wall clock on a shared machine) and the wall clock."""
    start = _clocks()
    yield
    own, children, wall = (round(b - a, 2) for a, b in zip(start, _clocks(), strict=True))
    _CPU_SECONDS[item.nodeid] = {"cpu_s": round(own + children, 2), "children_cpu_s": children, "wall_s": wall}


def pytest_sessionfinish() -> None:
    """Write ``{"tests": {nodeid: {cpu_s, children_cpu_s, wall_s}}}`` to $LMBRICKS_TEST_CPU_JSON, the most costly
    first (one file per xdist worker: ``.gw0`` ...); ``cpu_s`` counts the test's child processes too."""
    import json
    import os

    path = os.environ.get("LMBRICKS_TEST_CPU_JSON")
    if path and _CPU_SECONDS:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        target = Path(f"{path}.{worker}" if worker else path)
        ranked = dict(sorted(_CPU_SECONDS.items(), key=lambda kv: -kv[1]["cpu_s"]))
        total = round(sum(v["cpu_s"] for v in ranked.values()), 1)
        target.write_text(json.dumps({"total_cpu_s": total, "tests": ranked}, indent=1))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama saved as a Hugging Face directory (fp32)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"), tiny_llama_config(), seed=0)


@pytest.fixture(scope="session")
def tiny_relufied(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama ReLU-fied without training (``lmbricks sparsify relufy``), FATReLU's T chosen for 70% zeros."""
    from lmbricks.sparsify.config import RelufyConfig
    from lmbricks.sparsify.pipeline import relufy

    d = tmp_path_factory.mktemp("relufied")
    text = d / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog while the cat watches. " * 200)
    cfg = {"model": str(tiny_llama), "out": d / "out", "text_files": [text], "tokens": 0}
    cfg |= {"seq_len": 32, "eval_tokens": 64, "target_sparsity": 0.7}
    return relufy(RelufyConfig.model_validate(cfg)).out


@pytest.fixture(scope="session")
def tiny_mixtral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Mixtral (4 experts, top-2) saved as a Hugging Face directory (fp32)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_mixtral"), tiny_mixtral_config(), seed=0)


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """A test that sets torch's thread count gets it back afterwards: summation order (and so the last bits
    of golden values) depends on it, so one test's setting must not reach the tests after it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
