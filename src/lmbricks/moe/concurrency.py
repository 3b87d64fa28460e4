"""Run per-expert work concurrently on CPU: experts on T threads at once, each single-threaded.

An expert's matmuls are small (a few hundred rows). Split over two intra-op threads each one pays a
fork/join, and on a shared VM every join waits for the slower thread; giving each thread whole
experts removes the joins (bench/moe.py's expert shapes, forward, 60 interleaved rounds: median
126 ms concurrently against 167 ms one expert after another with two-thread GEMMs). The threads come
from :func:`lmbricks.threads.torch_workers` (intra-op threads set to 1 for the call and restored;
grad and inference modes carried to the workers). Work items must write disjoint outputs (or one
output per group, summed afterwards in a fixed order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lmbricks.threads import torch_workers

Slice = tuple[int, int, int]  # (expert, start row, end row)

# Experts run concurrently when they average at least this many rows; below it the per-expert work
# is too small to pay for the hand-off.
PARALLEL_MIN_ROWS = 64


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

    def run(i: int) -> None:
        work(i, groups[i])

    with torch_workers() as workers:
        futures = [workers.submit(run, i) for i in range(1, len(groups))]
        workers.call(run, 0)  # the calling thread takes one share
        for f in futures:
            f.result()


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
