"""The machine's limits, measured in the run that uses them: GEMM GFLOP/s (fp32, bf16) and bandwidth.

- GEMM: ``torch.mm`` of an (m x k) by a (k x n) matrix at each given shape, fp32 and bf16 (the
  shapes default to the benchmarks' own: bench/train_lm.py's FFN and head, bench/moe.py's dense
  FFN); the best rate over a short series of repetitions, 2 m k n FLOPs each. The summary rate of a
  dtype is the best over the shapes: the most the hardware gave at the workloads' own sizes.
- Bandwidth: a stream copy of a large buffer (256 MiB, far beyond the caches), read plus written
  bytes per second, best of a few.

Every repetition is timed by two clocks at once: wall time and the process's own CPU time (user +
system of all its threads). ``clock`` picks which one the summary keys use; the other clock's
figures are kept under ``by_clock``. A benchmark timed with ``--clock cpu`` (a loaded machine, one
thread) divides its FLOPs per CPU second by the GEMM's FLOPs per CPU second, like by like.

Other benchmarks call :func:`measure_machine` at their start and divide their FLOP rate or bytes/s
by these figures (model-FLOPs utilisation for training and prefill, bytes/s against bandwidth for
decode and merges). Prints one JSON object: ``gemm_gflops_fp32``, ``gemm_gflops_bf16``,
``bandwidth_gbs``, ``clock``, both clocks' figures and the per-shape rates.

Usage: python bench/machine.py [--shape 2048x512x1376 ...] [--device cpu|cuda] [--clock wall|cpu]
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


def _best_seconds(fn: Any, device: torch.device, min_seconds: float, max_reps: int = 50) -> dict[str, float]:
    """The fastest of repeated calls of ``fn`` (after one warm-up) by each clock, for at least ``min_seconds``.

    Returns:
        ``{"wall": best wall seconds, "cpu": best process-CPU seconds}``.
    """
    fn()
    _sync(device)
    best = {"wall": float("inf"), "cpu": float("inf")}
    spent, reps = 0.0, 0
    while (spent < min_seconds or reps < 3) and reps < max_reps:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        best = {"wall": min(best["wall"], dt), "cpu": min(best["cpu"], max(dc, 1e-9))}
        spent, reps = spent + dt, reps + 1
    return best


def gemm_gflops(shape: Shape, dtype: torch.dtype, device: torch.device, min_seconds: float = 0.5) -> dict[str, float]:
    """GFLOP/s of ``(m x k) @ (k x n)`` in ``dtype``: 2 m k n FLOPs over the best time, by each clock.

    Args:
        shape: ``(m, k, n)``.
        dtype: the operands' dtype (the result is in the same dtype).
        device: where to multiply.
        min_seconds: how long to keep repeating.

    Returns:
        ``{"wall": GFLOP/s by wall time, "cpu": GFLOP/s per second of the process's CPU time}``.
    """
    m, k, n = shape
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=gen, device=device).to(dtype)  # (m, k)
    b = torch.randn(k, n, generator=gen, device=device).to(dtype)  # (k, n)
    out = torch.empty(m, n, dtype=dtype, device=device)  # (m, n), preallocated: time the product only
    seconds = _best_seconds(lambda: torch.mm(a, b, out=out), device, min_seconds)
    return {clock: 2 * m * k * n / s / 1e9 for clock, s in seconds.items()}


def bandwidth_gbs(device: torch.device, mib: int = 256, min_seconds: float = 0.5) -> dict[str, float]:
    """Memory bandwidth by a stream copy: (read + written bytes) / best time, in GB/s, by each clock.

    Args:
        device: whose memory.
        mib: the buffer's size in MiB (far beyond the caches).
        min_seconds: how long to keep repeating.

    Returns:
        ``{"wall": GB/s by wall time, "cpu": GB/s per second of CPU time}`` (1e9 bytes per second).
    """
    src = torch.ones(mib << 18, device=device)  # fp32: mib MiB
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), device, min_seconds)
    return {clock: 2 * src.numel() * src.element_size() / s / 1e9 for clock, s in seconds.items()}


def measure_machine(
    shapes: Sequence[Shape] = DEFAULT_SHAPES,
    device: str | torch.device = "cpu",
    min_seconds: float = 0.5,
    clock: str = "wall",
) -> dict[str, Any]:
    """fp32 and bf16 GEMM rates at ``shapes`` and the memory bandwidth of ``device``, by both clocks.

    Args:
        shapes: ``(m, k, n)`` GEMM shapes (default: the benchmarks' own).
        device: ``"cpu"`` or a CUDA device.
        min_seconds: the time spent on each measurement.
        clock: ``"wall"`` or ``"cpu"``: the clock of the summary keys (the benchmark's own clock).

    Returns:
        ``{"gemm_gflops_fp32": best fp32 rate over the shapes by ``clock``, "gemm_gflops_bf16": ...,
        "bandwidth_gbs": ..., "clock": clock, "by_clock": {"wall": {the three}, "cpu": {...}},
        "gemm_by_shape": {"MxKxN": {"fp32": ..., "bf16": ...}} (by ``clock``), "device": ...,
        "threads": ..., "load_average": the 1, 5 and 15-minute load averages at the end}``; under load
        (other processes on the same cores) every wall-clock rate is lower than the machine's own.

    Raises:
        ValueError: an unknown clock, or the CPU clock on a GPU (host time says nothing there).
    """
    dev = torch.device(device)
    if clock not in ("wall", "cpu") or (clock == "cpu" and dev.type != "cpu"):
        raise ValueError(f"clock {clock!r}: 'wall', or 'cpu' on a CPU device (device {dev})")
    rates = {
        "x".join(map(str, s)): {name: gemm_gflops(s, dt, dev, min_seconds) for name, dt in _DTYPES.items()}
        for s in shapes
    }
    copy = bandwidth_gbs(dev, min_seconds=min_seconds)
    by_clock = {
        c: {
            "gemm_gflops_fp32": round(max(r["fp32"][c] for r in rates.values()), 1),
            "gemm_gflops_bf16": round(max(r["bf16"][c] for r in rates.values()), 1),
            "bandwidth_gbs": round(copy[c], 2),
        }
        for c in ("wall", "cpu")
    }
    return {
        **by_clock[clock],
        "clock": clock,
        "by_clock": by_clock,
        "gemm_by_shape": {s: {name: round(v[clock], 1) for name, v in r.items()} for s, r in rates.items()},
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
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="the summary keys' clock")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure_machine(args.shape or DEFAULT_SHAPES, args.device, args.seconds, args.clock)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
