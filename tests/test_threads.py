"""lmbricks.threads: T single-threaded torch workers, the caller's modes carried, the setting restored."""

from __future__ import annotations

import threading

import torch

from lmbricks.threads import single_threaded, torch_workers


def test_single_threaded_sets_one_thread_and_restores() -> None:
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_threaded() as before:
            assert before == 2 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(prev)


def test_workers_run_on_other_threads_in_the_callers_modes() -> None:
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode(), torch_workers() as workers:
            assert workers.count == 2 and torch.get_num_threads() == 1
            seen = workers.map(lambda i: (i, torch.is_inference_mode_enabled(), threading.get_ident()), range(4))
            on_caller = workers.call(lambda _: threading.get_ident(), 0)
        assert [s[0] for s in seen] == [0, 1, 2, 3] and all(s[1] for s in seen)
        assert on_caller == threading.get_ident() and all(s[2] != on_caller for s in seen)
        with torch.enable_grad(), torch_workers() as workers:
            assert workers.submit(lambda _: torch.is_grad_enabled(), 0).result()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(prev)
