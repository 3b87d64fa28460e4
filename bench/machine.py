"""The machine's limits, measured in the run that uses them: GEMM GFLOP/s (fp32, bf16) and bandwidth.

- GEMM: ``torch.mm`` of an (m x k) by a (k x n) matrix at each given shape, fp32 and bf16 (the
  shapes default to the benchmarks' own: bench/train_lm.py's FFN and head, bench/moe.py's dense
  FFN); the best rate over a short series of repetitions, 2 m k n FLOPs each. The summary rate of a
  dtype is the best over the shapes: the most the hardware gave at the workloads' own sizes.
- Bandwidth: a stream copy of a large buffer (256 MiB, far beyond the caches), read plus written
  bytes per second, best of a few.

Other benchmarks call :func:`measure_machine` at their start and divide their FLOP rate or bytes/s
by these figures (model-FLOPs utilisation for training and prefill, bytes/s against bandwidth for
decode and merges). Prints one JSON object: ``gemm_gflops_fp32``, ``gemm_gflops_bf16``,
``bandwidth_gbs`` and the per-shape rates.

Usage: python bench/machine.py [--shape 2048x512x1376 ...] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

Shape = tuple[int, int, int]
#: (m, k, n): 2048 tokens through bench/train_lm.py's SwiGLU (gate+up fused, 512 -> 2 x 1376) and its
#: head (512 -> 8192), and bench/moe.py's dense FFN of equal active FLOPs (512 -> 2 x 3584).
DEFAULT_SHAPES: tuple[Shape, ...] = ((2048, 512, 2752), (2048, 512, 8192), (2048, 512, 7168))
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Any, device: torch.device, min_seconds: float, max_reps: int = 50) -> float:
    """The fastest of repeated calls of ``fn`` (after one warm-up), for at least ``min_seconds``."""
    fn()
    _sync(device)
    best, spent, reps = float("inf"), 0.0, 0
    while (spent < min_seconds or reps < 3) and reps < max_reps:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def gemm_gflops(shape: Shape, dtype: torch.dtype, device: torch.device, min_seconds: float = 0.5) -> float:
    """GFLOP/s of ``(m x k) @ (k x n)`` in ``dtype``: 2 m k n FLOPs over the best time.

    Args:
        shape: ``(m, k, n)``.
        dtype: the operands' dtype (the result is in the same dtype).
        device: where to multiply.
        min_seconds: how long to keep repeating.

    Returns:
        The rate in GFLOP/s.
    """
    m, k, n = shape
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=gen, device=device).to(dtype)  # (m, k)
    b = torch.randn(k, n, generator=gen, device=device).to(dtype)  # (k, n)
    out = torch.empty(m, n, dtype=dtype, device=device)  # (m, n), preallocated: time the product only
    seconds = _best_seconds(lambda: torch.mm(a, b, out=out), device, min_seconds)
    return 2 * m * k * n / seconds / 1e9


def bandwidth_gbs(device: torch.device, mib: int = 256, min_seconds: float = 0.5) -> float:
    """Memory bandwidth by a stream copy: (read + written bytes) / best time, in GB/s.

    Args:
        device: whose memory.
        mib: the buffer's size in MiB (far beyond the caches).
        min_seconds: how long to keep repeating.

    Returns:
        GB/s (1e9 bytes per second).
    """
    src = torch.ones(mib << 18, device=device)  # fp32: mib MiB
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), device, min_seconds)
    return 2 * src.numel() * src.element_size() / seconds / 1e9


def measure_machine(
    shapes: Sequence[Shape] = DEFAULT_SHAPES, device: str | torch.device = "cpu", min_seconds: float = 0.5
) -> dict[str, Any]:
    """fp32 and bf16 GEMM rates at ``shapes`` and the memory bandwidth of ``device``.

    Args:
        shapes: ``(m, k, n)`` GEMM shapes (default: the benchmarks' own).
        device: ``"cpu"`` or a CUDA device.
        min_seconds: the time spent on each measurement.

    Returns:
        ``{"gemm_gflops_fp32": best fp32 rate over the shapes, "gemm_gflops_bf16": ...,
        "bandwidth_gbs": ..., "gemm_by_shape": {"MxKxN": {"fp32": ..., "bf16": ...}}, "device": ...,
        "threads": ..., "load_average": the 1, 5 and 15-minute load averages at the end}``; under load
        (other processes on the same cores) every rate is lower than the machine's own.
    """
    dev = torch.device(device)
    by_shape = {
        "x".join(map(str, s)): {name: round(gemm_gflops(s, dt, dev, min_seconds), 1) for name, dt in _DTYPES.items()}
        for s in shapes
    }
    return {
        "gemm_gflops_fp32": max(r["fp32"] for r in by_shape.values()),
        "gemm_gflops_bf16": max(r["bf16"] for r in by_shape.values()),
        "bandwidth_gbs": round(bandwidth_gbs(dev, min_seconds=min_seconds), 2),
        "gemm_by_shape": by_shape,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def _shape(text: str) -> Shape:
    m, k, n = (int(v) for v in text.lower().split("x"))
    return m, k, n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--shape", type=_shape, action="append", help="MxKxN (repeatable; default: the benchmarks')")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = ap.parse_args(argv)
    result = measure_machine(args.shape or DEFAULT_SHAPES, args.device, args.seconds)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
