"""Pieces shared by the methods with a chunked form (a statistics pass, then row blocks).

nuslerp and karcher reduce each tensor to a few dot products (one streaming pass over row blocks,
accumulated in float64), compute coefficients from them, and then write ``θ0 + Σ ci (θi - θ0)`` (or
``Σ ci θi`` without a base) block by block, through the fused kernels where they apply. sce and
arcee_fusion rank a per-entry statistic computed block by block into one flat fp32 tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lmbricks.merge.task_vectors import fused_ok, row_blocks


def weighted_sum(
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    coeffs: Sequence[float],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``θ0 + Σ ci (θi - θ0)``, or ``Σ ci θi`` when ``base`` is None, with scalar coefficients.

    Args:
        base: θ0 (shape ``S``) or None.
        tensors: θi, shape ``S``, any float dtype.
        coeffs: ci, one per tensor.
        out: optional destination (shape ``S``, any float dtype).

    Returns:
        fp32 tensor of shape ``S`` (or ``out``).
    """
    if fused_ok(base, *tensors):
        from lmbricks.merge import kernels

        return kernels.combine_block(base, list(tensors), [float(c) for c in coeffs], out=out)
    b = base.float() if base is not None else None
    res = torch.zeros(tensors[0].shape, dtype=torch.float32)
    for t, c in zip(tensors, coeffs, strict=True):
        res.add_(t.float() - b if b is not None else t.float(), alpha=float(c))
    if b is not None:
        res.add_(b)
    return res if out is None else out.copy_(res)


def gram(tensors: Sequence[torch.Tensor], base: torch.Tensor | None = None) -> torch.Tensor:
    """The Gram matrix ``G[i, j] = <vi, vj>`` of the flattened ``vi = θi - θ0`` (or ``θi``), in float64.

    One pass over row blocks (scratch: one float64 block per input).

    Args:
        tensors: θi, ``k`` tensors of shape ``S``.
        base: optional θ0 of shape ``S``.

    Returns:
        float64 tensor ``(k, k)``.
    """
    k = len(tensors)
    g = torch.zeros(k, k, dtype=torch.float64)
    views = [t.reshape(-1) if t.dim() <= 1 else t for t in tensors]
    b = base.reshape(-1) if base is not None and base.dim() <= 1 else base
    for r0, r1 in row_blocks(views[0].shape):
        rows = torch.stack([t[r0:r1].reshape(-1).double() for t in views])  # (k, m)
        if b is not None:
            rows -= b[r0:r1].reshape(1, -1).double()
        g += rows @ rows.T
    return g


def on_whole_tensor(
    prepare: Callable[..., Any],
    apply: Callable[..., torch.Tensor],
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    **params: Any,
) -> torch.Tensor:
    """A method's result on whole tensors from its chunked form: ``apply(prepare(...))`` at offset 0.

    Args:
        prepare, apply: the two halves of the method's :class:`~lmbricks.merge.registry.ChunkedForm`.
        base: θ0 or None.
        tensors: the inputs.
        **params: the method's parameters, passed to both halves (which check them).

    Returns:
        fp32 tensor shaped like the inputs.
    """
    return apply(base, tensors, state=prepare(base, tensors, **params), offset=0, **params)


def flat_statistic(shape: torch.Size, block_fn: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """A per-entry statistic of a tensor, computed row block by row block into one flat fp32 tensor.

    Args:
        shape: the tensor's shape (1-D and 0-D tensors are one block of entries).
        block_fn: ``(r0, r1) -> statistic of rows r0:r1`` (any shape with ``(r1 - r0) · row`` entries).

    Returns:
        fp32 tensor of ``shape.numel()`` entries, in flat (row-major) order.
    """
    flat_shape = torch.Size([shape.numel()]) if len(shape) <= 1 else shape
    out = torch.empty(shape.numel(), dtype=torch.float32)
    per_row = int(flat_shape[1:].numel()) if len(flat_shape) > 1 else 1
    for r0, r1 in row_blocks(flat_shape):
        out[r0 * per_row : r1 * per_row] = block_fn(r0, r1).reshape(-1)
    return out
