"""Process settings that decide how fast the hardware runs: the allocator and the precision.

- :func:`tune_process`: keep large tensor buffers in the heap (glibc ``mallopt``); once per process.
- :func:`native_bf16`, :func:`resolve_precision`, :func:`autocast`, :func:`inference_dtype`: bf16 where
  the device has it (training: autocast over fp32 master weights; inference: bf16 weights).

Nothing here imports torch at import time, so ``import lmbricks`` stays light.
"""

from __future__ import annotations

from lmbricks.runtime.allocator import ENV_VAR, AllocatorTuning, other_allocator, tune_process, tuning_plan
from lmbricks.runtime.precision import (
    Precision,
    RequestedPrecision,
    autocast,
    cpu_flags,
    cpu_native_bf16,
    inference_dtype,
    native_bf16,
    resolve_precision,
)

__all__ = [
    "ENV_VAR",
    "AllocatorTuning",
    "Precision",
    "RequestedPrecision",
    "autocast",
    "cpu_flags",
    "cpu_native_bf16",
    "inference_dtype",
    "native_bf16",
    "other_allocator",
    "resolve_precision",
    "tune_process",
    "tuning_plan",
]
