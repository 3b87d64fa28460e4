"""lmbricks.runtime.allocator: the decision is pure; the call keeps large buffers in the heap."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from lmbricks.runtime import ENV_VAR, other_allocator, tune_process, tuning_plan

MAPS_GLIBC = """\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
7f2a10000000-7f2a10028000 r--p 00000000 fe:01 1311                       /usr/lib/x86_64-linux-gnu/libc.so.6
"""
MAPS_JEMALLOC = MAPS_GLIBC + (
    "7f2a20000000-7f2a20010000 r-xp 00000000 fe:01 2222                       /tmp/x/libjemalloc.so.2\n"
)


def test_other_allocator_read_from_maps() -> None:
    assert other_allocator(MAPS_GLIBC) is None
    assert other_allocator(MAPS_JEMALLOC) == "jemalloc"
    tc = MAPS_GLIBC + "7f00-7f01 r-xp 0 fe:01 3 /usr/lib/libtcmalloc_minimal.so.4\n"
    assert other_allocator(tc) == "tcmalloc"
    assert other_allocator("") is None


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_plan_opt_out_by_environment(value: str) -> None:
    plan = tuning_plan({ENV_VAR: value}, "glibc", MAPS_GLIBC)
    assert plan is not None and not plan.applied and ENV_VAR in plan.reason


def test_plan_no_op_off_glibc_and_under_another_allocator() -> None:
    musl = tuning_plan({}, "", "")
    assert musl is not None and not musl.applied and "not glibc" in musl.reason and musl.settings == {}
    je = tuning_plan({ENV_VAR: "1"}, "glibc", MAPS_JEMALLOC)
    assert je is not None and je.allocator == "jemalloc" and not je.applied


def test_plan_goes_ahead_on_glibc() -> None:
    assert tuning_plan({}, "glibc", MAPS_GLIBC) is None
    assert tuning_plan({ENV_VAR: "1"}, "glibc", MAPS_GLIBC) is None


def test_tune_process_is_idempotent() -> None:
    first = tune_process()
    assert tune_process() is first
    if platform.libc_ver()[0] == "glibc":
        assert first.applied or "turned off" in first.reason or "loaded" in first.reason


_FAULTS = textwrap.dedent(
    """
    import resource, sys
    import lmbricks
    tuning = lmbricks.tune_process()
    import torch
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    sizes = [48 << 20, 40 << 20, 44 << 20]  # varied, as activations are; all above glibc's 32 MiB cap
    for n in sizes:  # the heap grows once
        torch.empty(n // 4).fill_(1.0)
    before = faults()
    for _ in range(10):
        for n in sizes:
            torch.empty(n // 4).fill_(1.0)
    print(tuning.applied, faults() - before)
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_tuned_process_reuses_heap_pages() -> None:
    """With the tuning, re-allocating freed 40-48 MiB buffers faults in (almost) no new pages."""
    import os

    def run(env_value: str) -> tuple[bool, int]:
        env = {**os.environ, ENV_VAR: env_value}
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
        applied, faults = out.stdout.split()
        return applied == "True", int(faults)

    tuned_applied, tuned = run("1")
    default_applied, default = run("0")
    assert tuned_applied and not default_applied
    pages = 30 * (44 << 20) // 4096  # the pages the thirty buffers touch
    assert default > pages // 2  # every buffer mmap'd and faulted in again
    assert tuned < default // 4
