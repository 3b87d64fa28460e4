"""Few-row products of bench/moe.py's expert projections: which weight layout multiplies fastest.

For each projection (``gate_up``: 512 -> 3584, ``down``: 1792 -> 512), rows 1, 2 and 8, bf16 and
fp32, one thread: the weight stored (K, N) and multiplied with ``torch.mm``; stored (N, K) (the
nn.Linear / Hugging Face layout) with ``F.linear`` and with ``matmul`` of a transposed view; and
packed once in oneDNN's blocked layout (bf16, :mod:`lmbricks.moe.packed`) or in MKL's (fp32,
``torch.ops.mkl._mkl_linear``). Eight experts' weights are multiplied in turn so that they come
from memory, as in a decode step. Each figure is the median thread CPU time of one product, in us.
Prints one JSON object ``{dtype: {projection: {layout: [us at 1, 2, 8 rows]}}}``.

Usage: python bench/moe_layouts.py [--calls N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

ROWS = (1, 2, 8)
PROJECTIONS = {"gate_up": (512, 2 * 1792), "down": (1792, 512)}  # (K, N)
EXPERTS = 8


def _us(fn: Callable[[], object], calls: int) -> float:
    """Median thread CPU microseconds of one product (``fn`` runs all EXPERTS of them)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.thread_time_ns()
        fn()
        times.append(time.thread_time_ns() - t0)
    return round(statistics.median(times) / 1e3 / EXPERTS, 1)


def layouts(dtype: torch.dtype, k: int, n: int, calls: int) -> dict[str, list[float]]:
    """``{layout: [us at each of ROWS]}`` for one projection (K, N) in ``dtype``."""
    from lmbricks.moe.packed import pack_linear_weight, packed_linear

    w_kn = [torch.randn(k, n).to(dtype) for _ in range(EXPERTS)]  # (K, N) row-major
    w_nk = [w.t().contiguous() for w in w_kn]  # (N, K): nn.Linear's layout
    out: dict[str, list[float]] = {"kn_mm": [], "nk_linear": [], "nk_matmul_t": [], "packed": []}
    for m in ROWS:
        x = torch.randn(m, k).to(dtype)
        products: dict[str, Callable[[], object]] = {
            "kn_mm": lambda x=x: [torch.mm(x, w) for w in w_kn],
            "nk_linear": lambda x=x: [F.linear(x, w) for w in w_nk],
            "nk_matmul_t": lambda x=x: [torch.matmul(x, w.t()) for w in w_nk],
        }
        if dtype == torch.bfloat16:
            packed = [pack_linear_weight(w) for w in w_nk]
            products["packed"] = lambda x=x, packed=packed: [packed_linear(x, p) for p in packed]
        else:
            mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, m) for w in w_nk]
            products["packed"] = lambda x=x, m=m, mkl=mkl: [
                torch.ops.mkl._mkl_linear(x, p, w, None, m) for p, w in zip(mkl, w_nk, strict=True)
            ]
        for name, fn in products.items():
            out[name].append(_us(fn, calls))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()  # every benchmark keeps large buffers in the heap alike
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=60, help="timed calls per figure (after 5 warm-up calls)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    result: dict[str, Any] = {"bench": "moe_layouts", "rows": list(ROWS), "clock": "thread_cpu", "threads": 1}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        result[name] = {p: layouts(dtype, k, n, args.calls) for p, (k, n) in PROJECTIONS.items()}
    result["torch"] = torch.__version__
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
