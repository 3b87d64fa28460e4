"""Keep large tensor buffers in the process heap instead of one ``mmap`` per allocation.

glibc's ``malloc`` serves every request above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised
dynamically up to 32 MiB as such blocks are freed) with a fresh anonymous mapping and unmaps it on
``free``. A training step allocates and frees its activations and gradients every step, so each
step faults in, zeroes and unmaps hundreds of megabytes; on virtual machines those page faults
dominated the step (457 -> 2,315 tokens/s, issue #15). :func:`tune_process` sets the threshold to
1 GiB (which also turns the dynamic adjustment off, as glibc documents for an explicit setting)
and raises ``M_TRIM_THRESHOLD`` so freed memory at the top of the heap is kept for the next step
instead of being returned to the kernel and faulted in again. The price is that a process keeps
up to ``TRIM_THRESHOLD`` of free heap after its peak; its peak itself does not change.

Opt out with ``LMBRICKS_TUNE_ALLOCATOR=0``. Under another allocator (jemalloc or tcmalloc loaded
with ``LD_PRELOAD``), with a C library other than glibc (musl, macOS) or where ``mallopt`` cannot be
found, the call changes nothing and its result says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The environment variable that turns the tuning off (``0``, ``false``, ``no`` or ``off``).
ENV_VAR = "LMBRICKS_TUNE_ALLOCATOR"
#: glibc's ``mallopt`` parameter numbers (``<malloc.h>``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Requests up to this size come from the heap (a larger buffer's own work dwarfs its page faults).
MMAP_THRESHOLD = 1 << 30
#: Free memory at the top of the heap is returned to the kernel only beyond this; ``mallopt`` takes a
#: C ``int``, so 2 GiB - 1 is the largest value it accepts.
TRIM_THRESHOLD = (1 << 31) - 1
_OFF = frozenset({"0", "false", "no", "off"})
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@dataclass(frozen=True)
class AllocatorTuning:
    """What :func:`tune_process` did.

    Attributes:
        applied: True when the settings are in force in this process.
        allocator: ``"glibc"``, the name of a preloaded allocator (``"jemalloc"``, ...) or the C
            library found (``"musl"``, ``"unknown"``).
        reason: one sentence: what was set, or why nothing was.
        settings: the ``mallopt`` parameters set, by name (empty when nothing was).
    """

    applied: bool
    allocator: str
    reason: str
    settings: dict[str, int] = field(default_factory=dict)


def other_allocator(maps: str) -> str | None:
    """The name of a non-glibc allocator mapped into a process, from its ``/proc/<pid>/maps`` text.

    Args:
        maps: the text of ``/proc/self/maps`` (one mapping per line, the file path last).

    Returns:
        ``"jemalloc"``, ``"tcmalloc"`` or ``"mimalloc"`` when such a library is mapped, else None.
    """
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1] if "/" in line else ""
        for allocator in _OTHER_ALLOCATORS:
            if name.startswith(f"lib{allocator}"):
                return allocator
    return None


def tuning_plan(environ: Mapping[str, str], libc: str, maps: str) -> AllocatorTuning | None:
    """Decide whether to tune: None to go ahead, else the no-op result that says why not.

    Args:
        environ: the process environment (``LMBRICKS_TUNE_ALLOCATOR`` is read from it).
        libc: the C library's name as ``platform.libc_ver()`` reports it (``"glibc"``, ``""``, ...).
        maps: the text of ``/proc/self/maps`` ("" where there is none).

    Returns:
        None when glibc's ``mallopt`` should be called, else an ``AllocatorTuning`` with
        ``applied=False``.
    """
    if environ.get(ENV_VAR, "1").strip().lower() in _OFF:
        return AllocatorTuning(False, libc or "unknown", f"turned off by {ENV_VAR}={environ[ENV_VAR]}")
    other = other_allocator(maps)
    if other is not None:
        return AllocatorTuning(False, other, f"{other} is loaded; it keeps its own heap, nothing to set")
    if libc != "glibc":
        return AllocatorTuning(False, libc or "unknown", "not glibc: mallopt is glibc's, nothing to set")
    return None


_RESULT: AllocatorTuning | None = None


def tune_process() -> AllocatorTuning:
    """Keep large tensor buffers in the heap for the rest of this process (idempotent, cheap).

    Call it once at the start of a process, before the work; the ``lmbricks`` command, the test
    suite and the benchmarks do. The first call decides; later calls return its result.

    Returns:
        An :class:`AllocatorTuning` saying what was set, or why nothing was (opted out with
        ``LMBRICKS_TUNE_ALLOCATOR=0``, another allocator preloaded, not glibc).
    """
    global _RESULT
    if _RESULT is None:
        _RESULT = _tune()
    return _RESULT


def _tune() -> AllocatorTuning:
    maps_path = Path("/proc/self/maps")
    maps = maps_path.read_text() if maps_path.exists() else ""
    skip = tuning_plan(os.environ, platform.libc_ver()[0], maps)
    if skip is not None:
        return skip
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return AllocatorTuning(False, "glibc", "the C library has no mallopt")
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # both C ints: a larger value would wrap silently
    mallopt.restype = ctypes.c_int
    settings = {"M_MMAP_THRESHOLD": MMAP_THRESHOLD, "M_TRIM_THRESHOLD": TRIM_THRESHOLD}
    numbers = {"M_MMAP_THRESHOLD": M_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": M_TRIM_THRESHOLD}
    refused = [name for name, value in settings.items() if mallopt(numbers[name], value) != 1]
    if refused:
        return AllocatorTuning(False, "glibc", f"mallopt refused {', '.join(refused)}")
    return AllocatorTuning(True, "glibc", "large buffers stay in the heap (mmap threshold 1 GiB, trim 2 GiB)", settings)
