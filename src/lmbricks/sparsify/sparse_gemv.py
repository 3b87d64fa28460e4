"""TEAL's decoding kernel: a one-token linear layer that reads only the weight rows of its kept inputs.

For one token, ``y = W x`` with ``W`` (out, in). When a threshold zeroes most entries of ``x``
(``x_i`` with ``|x_i| <= t``), only the columns ``W[:, i]`` of the kept entries contribute:
``y = sum over kept i of x_i W[:, i]``. TEAL's GPU kernel gathers those columns; here ``W`` is
stored transposed once, ``W^T`` (in, out) row-major, so a kept input's column is one contiguous
row and the product streams ``kept x out`` weights from memory instead of ``in x out``. The
selection is fused in (one pass over ``x``), and the rows are accumulated eight at a time into an
fp32 ``y`` that stays in the L1 cache. bf16 weights are read as their 16-bit patterns and widened
by a shift (bf16 is the top half of an fp32), so a bf16 layer streams two bytes per weight.

The arithmetic is fp32 throughout (bf16 results are rounded once, at the end), in the kept rows'
order: it equals the dense product of the thresholded input to float tolerance, not bit for bit
(BLAS sums in another order). :func:`sparse_linear_reference` is the same sum written with torch,
the specification the tests hold the kernel to.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
import torch
from torch import Tensor

from lmbricks.merge.kernels import _JIT, _load  # the on-disk kernel cache and the bf16 widening load

_jit: Any = numba.njit(**_JIT)


@_jit
def _kept(x: Any, t: float, idx: Any) -> int:  # pragma: no cover - compiled
    """Write the indices i with |x_i| > t into ``idx``; return how many."""
    n = 0
    for i in range(x.shape[0]):
        if abs(x[i]) > t:
            idx[n] = i
            n += 1
    return n


@_jit
def _gemv_rows(x: Any, wt: Any, idx: Any, n: int, y: Any) -> None:  # pragma: no cover - compiled
    """y = sum over the first n kept rows i = idx[:n] of x[i] * wt[i] (fp32), eight rows per pass over y."""
    out = y.shape[0]
    for j in range(out):
        y[j] = np.float32(0.0)
    k = 0
    while k + 8 <= n:  # eight weight streams at once: y is read and written once per eight rows
        i0, i1, i2, i3 = idx[k], idx[k + 1], idx[k + 2], idx[k + 3]
        i4, i5, i6, i7 = idx[k + 4], idx[k + 5], idx[k + 6], idx[k + 7]
        a0, a1, a2, a3 = np.float32(x[i0]), np.float32(x[i1]), np.float32(x[i2]), np.float32(x[i3])
        a4, a5, a6, a7 = np.float32(x[i4]), np.float32(x[i5]), np.float32(x[i6]), np.float32(x[i7])
        r0, r1, r2, r3, r4, r5, r6, r7 = wt[i0], wt[i1], wt[i2], wt[i3], wt[i4], wt[i5], wt[i6], wt[i7]
        for j in range(out):
            lo = a0 * _load(r0, j) + a1 * _load(r1, j) + a2 * _load(r2, j) + a3 * _load(r3, j)
            hi = a4 * _load(r4, j) + a5 * _load(r5, j) + a6 * _load(r6, j) + a7 * _load(r7, j)
            y[j] += lo + hi
        k += 8
    while k < n:
        a, r = np.float32(x[idx[k]]), wt[idx[k]]
        for j in range(out):
            y[j] += a * _load(r, j)
        k += 1


@_jit
def _sparse_gemv(x: Any, t: float, wt: Any, idx: Any, y: Any) -> int:  # pragma: no cover - compiled
    n = _kept(x, t, idx)
    _gemv_rows(x, wt, idx, n, y)
    return n


@functools.lru_cache(maxsize=4096)
def _compared(threshold: float, dtype: torch.dtype) -> float:
    """The threshold as torch compares a tensor of ``dtype`` with it: rounded to that dtype."""
    return float(torch.tensor(threshold, dtype=dtype))


def transposed_weight(weight: Tensor) -> Tensor:
    """``W^T`` (in, out), contiguous, in ``weight``'s dtype (fp32 or bf16): what :func:`sparse_linear` reads.

    Raises:
        ValueError: a dtype other than fp32 and bf16, or not a matrix.
    """
    if weight.dim() != 2 or weight.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"weight: an fp32 or bf16 matrix expected, got {weight.dtype} of shape {tuple(weight.shape)}")
    return weight.detach().t().contiguous()  # (in, out)


def sparse_linear(x: Tensor, wt: Tensor, threshold: float, bias: Tensor | None = None) -> tuple[Tensor, int]:
    """One token through a linear layer, with the input entries of magnitude <= ``threshold`` dropped.

    Args:
        x: (in,) or (1, ..., 1, in): one token's input, fp32 or bf16.
        wt: (in, out) from :func:`transposed_weight`.
        threshold: t >= 0; entries with ``|x_i| <= t`` count as zero (t = 0 drops only exact zeros).
        bias: (out,) or None.

    Returns:
        ``(y, kept)``: y of x's leading shape with ``out`` features, in x's dtype; kept, the number
        of input entries used.
    """
    x32 = x.reshape(-1).float().contiguous()  # (in,) fp32 (bf16 widens exactly)
    t = _compared(threshold, x.dtype)
    idx = np.empty(x32.shape[0], dtype=np.int64)
    y = torch.empty(wt.shape[1], dtype=torch.float32)  # (out,)
    w = wt.view(torch.uint16) if wt.dtype == torch.bfloat16 else wt
    kept = int(_sparse_gemv(x32.numpy(), np.float32(t), w.numpy(), idx, y.numpy()))
    if bias is not None:
        y += bias.float()
    return y.to(x.dtype).view(*x.shape[:-1], wt.shape[1]), kept


def sparse_linear_reference(x: Tensor, wt: Tensor, threshold: float) -> Tensor:
    """The specification of :func:`sparse_linear` (no bias) in torch: the kept rows' fp32 sum, (out,) in x's dtype."""
    x32 = x.reshape(-1).float()
    kept = (x.reshape(-1).abs() > threshold).nonzero().flatten()  # (k,)
    return (x32[kept, None] * wt[kept].float()).sum(0).to(x.dtype)  # (out,)
