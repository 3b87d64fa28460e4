"""CPU work on T Python threads at once, each running single-threaded torch kernels.

Many mid-sized torch ops split over the intra-op threads pay a fork/join each, and on a shared VM
every join waits for the slowest thread; giving each of T Python threads whole work items (merge
row blocks, MoE experts) removes the joins and uses the cores as well. :func:`torch_workers` sets
torch's intra-op thread count to 1 for its block and restores it (the setting is process-wide:
another Python thread running torch meanwhile also sees one thread), and hands out a shared pool
whose workers run under the caller's grad and inference modes (both are per thread in torch).

Work items must write disjoint outputs; a work item must not wait for another one in the same pool.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _shared_pool(workers: int) -> ThreadPoolExecutor:
    """The process's worker pool, grown (replaced) when a caller needs more workers than it has."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmbricks-worker")
        return _POOL


@contextlib.contextmanager
def single_threaded() -> Iterator[int]:
    """Run the block with torch's intra-op threads set to 1; yields the previous count, restored after."""
    prev = torch.get_num_threads()
    if prev != 1:
        torch.set_num_threads(1)
    try:
        yield prev
    finally:
        if prev != 1:
            torch.set_num_threads(prev)


@dataclass(frozen=True)
class Workers:
    """``count`` pool threads that run work with the grad and inference modes captured from the caller."""

    count: int
    pool: ThreadPoolExecutor
    grad: bool
    inference: bool

    def _in_modes(self, fn: Callable[[T], R]) -> Callable[[T], R]:
        def run(item: T) -> R:
            with torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad):
                return fn(item)

        return run

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]``, computed on the pool (results in order; the first error is raised)."""
        return list(self.pool.map(self._in_modes(fn), items))

    def submit(self, fn: Callable[[T], R], item: T) -> Future[R]:
        """``fn(item)`` on the pool."""
        return self.pool.submit(self._in_modes(fn), item)

    def call(self, fn: Callable[[T], R], item: T) -> R:
        """``fn(item)`` on the calling thread, in the same modes as the pool's work."""
        return self._in_modes(fn)(item)


@contextlib.contextmanager
def torch_workers() -> Iterator[Workers]:
    """T workers (T = torch's intra-op thread count on entry), torch single-threaded during the block.

    Returns:
        A context manager yielding the :class:`Workers`.
    """
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    with single_threaded() as threads:
        yield Workers(max(1, threads), _shared_pool(max(1, threads)), grad, inference)
