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


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama saved as a Hugging Face directory (fp32)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"), tiny_llama_config(), seed=0)


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
