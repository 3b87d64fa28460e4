"""A benchmark measures the code, not the process's history: two runs agree on their ratio within 15%."""

from __future__ import annotations

import os

import pytest


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("LMBRICKS_BENCH_TESTS") != "1",
    reason="timing test: needs a machine no other test shares (LMBRICKS_BENCH_TESTS=1); measured 1.005 vs 1.191 "
    "beside a parallel test run, so it stays out of the shared suite until issue #15 makes the ratio steadier",
)
def test_train_vs_hf_reproduces_within_15_percent() -> None:
    """bench/train_lm.py --quick on one thread, twice: the ratios agree within 15%.

    Timed by each process's own CPU time (``clock="cpu"``; page faults included), so that the other
    processes sharing the test machine's cores do not decide the outcome.
    """
    from train_lm import train_vs_hf

    first, second = (
        train_vs_hf(quick=True, precision="fp32", device="cpu", default_alloc_rounds=0, threads=1, clock="cpu")
        for _ in range(2)
    )
    a, b = first["train_vs_hf"], second["train_vs_hf"]
    assert abs(a - b) / min(a, b) <= 0.15, (first, second)
    assert first["allocator"]["applied"] and first["precision"] == "fp32" and 0 < first["train_mfu"] < 1
