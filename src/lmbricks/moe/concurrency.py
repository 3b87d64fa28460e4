"""Run per-expert work concurrently on CPU: experts on T threads at once, each single-threaded.

An expert's matmuls are small (a few hundred rows). Split over two intra-op threads each one pays a
fork/join, and on a shared VM every join waits for the slower thread; giving each thread whole
experts removes the joins (bench/moe.py's expert shapes, forward, 60 interleaved rounds: median
126 ms concurrently against 167 ms one expert after another with two-thread GEMMs). The intra-op
thread count is set to 1 for the duration of a call and restored (PyTorch's setting is
process-wide: another Python thread running torch during that call also sees one thread); grad and
inference modes, which are per thread, are carried to the workers. Work items must write disjoint
outputs (or one output per group, summed afterwards in a fixed order).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

Slice = tuple[int, int, int]  # (expert, start row, end row)

# Experts run concurrently when they average at least this many rows; below it the per-expert work
# is too small to pay for the hand-off.
PARALLEL_MIN_ROWS = 64

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmbricks-experts")
        return _POOL


def balanced_groups(slices: Sequence[Slice], n: int) -> list[list[Slice]]:
    """Split expert slices into at most ``n`` non-empty groups of about equal rows (largest first)."""
    groups: list[list[Slice]] = [[] for _ in range(n)]
    load = [0] * n
    for item in sorted(slices, key=lambda b: b[1] - b[2]):
        i = load.index(min(load))
        groups[i].append(item)
        load[i] += item[2] - item[1]
    return [g for g in groups if g]


def concurrent_groups(slices: Sequence[Slice], x: Tensor) -> list[list[Slice]] | None:
    """The groups to run concurrently, or None to run the slices one after another.

    Concurrency applies on CPU with more than one intra-op thread, at least two slices and at least
    ``PARALLEL_MIN_ROWS`` rows per slice on average.
    """
    threads = torch.get_num_threads()
    rows = sum(b[2] - b[1] for b in slices)
    if x.device.type != "cpu" or threads < 2 or len(slices) < 2 or rows < PARALLEL_MIN_ROWS * len(slices):
        return None
    return balanced_groups(slices, threads)


def run_groups(groups: list[list[Slice]], work: Callable[[int, list[Slice]], None]) -> None:
    """Call ``work(i, groups[i])`` for every group, concurrently, each worker single-threaded."""
    threads = torch.get_num_threads()
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(i: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            work(i, groups[i])

    torch.set_num_threads(1)
    try:
        futures = [_pool(threads).submit(run, i) for i in range(1, len(groups))]
        run(0)  # the calling thread takes one share
        for f in futures:
            f.result()
    finally:
        torch.set_num_threads(threads)


def for_each_expert(slices: Sequence[Slice], fn: Callable[[int, int, int], None], x: Tensor) -> None:
    """Call ``fn(e, start, end)`` for every slice (disjoint outputs), concurrently where it pays."""
    groups = concurrent_groups(slices, x)
    if groups is None:
        for e, a0, a1 in slices:
            fn(e, a0, a1)
        return

    def work(_i: int, group: list[Slice]) -> None:
        for e, a0, a1 in group:
            fn(e, a0, a1)

    run_groups(groups, work)
