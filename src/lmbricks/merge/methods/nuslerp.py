"""NuSLERP: spherical interpolation of two models, of whole tensors or of their row / column vectors.

With a base, the two task vectors ``θi - θ0`` are interpolated (task-vector SLERP) and added back.
Each vector's interpolation is ``c1 v1 + c2 v2`` with coefficients from three dot products, so the
tensor is streamed twice: one pass for the dot products (float64 sums over row blocks), one that
writes ``θ0 + c1 v1 + c2 v2`` block by block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmbricks.errors import MergeError
from lmbricks.merge.methods.linear import WEIGHT
from lmbricks.merge.methods.streaming import gram, on_whole_tensor, weighted_sum
from lmbricks.merge.registry import ChunkedForm, Param, bind, register_method
from lmbricks.merge.task_vectors import row_blocks

_NAME = "nuslerp"
_PARAMS = (
    WEIGHT,
    Param("nuslerp_row_wise", bool, default=False,
          help="with nuslerp_flatten false: one vector per column (along the first axis) instead of per row"),
    Param("nuslerp_flatten", bool, default=True,
          help="interpolate the whole tensor as one vector; false: row (or column) vectors one by one"),
)  # fmt: skip
_EPS = 1e-8  # vectors count as colinear when 1 - cos² <= eps² (mergekit's test)
_NORM_FLOOR = 1e-7  # a zero vector's norm counts as this (its direction is then orthogonal to all)


@dataclass(frozen=True)
class NuslerpState:
    """The coefficients of ``θ0 + c1 v1 + c2 v2``: 0-d (one vector), ``(rows, ..., 1)`` (row vectors,
    ``per_row``) or ``(1, ...)`` (column vectors), fp32."""

    c1: torch.Tensor
    c2: torch.Tensor
    per_row: bool


def interpolation_factor(weight: Sequence[float]) -> float:
    """``t = w2 / (w1 + w2)`` (0.5 when the weights sum to about zero, as mergekit)."""
    total = float(weight[0]) + float(weight[1])
    return 0.5 if abs(total) < 1e-6 else float(weight[1]) / total


def _axis(shape: torch.Size, row_wise: bool, flatten: bool) -> int | None:
    """The axis along which vectors lie (None: the whole tensor is one vector)."""
    if flatten or len(shape) <= 1:
        return None
    return 0 if row_wise else -1


def _sums(base: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, axis: int) -> torch.Tensor:
    """``(<v1,v2>, |v1|², |v2|²)`` per vector along ``axis`` (0 or -1), float64, stacked on a new first
    axis with the reduced axis kept (``(3, 1, ...)`` or ``(3, ..., 1)``)."""
    kept = (1, *a.shape[1:]) if axis == 0 else (*a.shape[:-1], 1)
    acc = torch.zeros(3, *kept, dtype=torch.float64)
    for r0, r1 in row_blocks(a.shape):
        v1, v2 = a[r0:r1].float(), b[r0:r1].float()
        if base is not None:
            bb = base[r0:r1].float()
            v1, v2 = v1 - bb, v2 - bb
        parts = [(x * y).sum(dim=axis, keepdim=True, dtype=torch.float64) for x, y in ((v1, v2), (v1, v1), (v2, v2))]
        if axis == 0:
            acc += torch.stack(parts)
        else:
            acc[:, r0:r1] = torch.stack(parts)
    return acc


def slerp_coefficients(
    t: float, dot: torch.Tensor, sq1: torch.Tensor, sq2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SLERP coefficients from the dot product and squared norms of two vectors (any matching shapes).

    cos Ω = <v1,v2> / (|v1| |v2|) (norms floored at 1e-7); ``c1 = sin((1-t)Ω)/sin Ω``,
    ``c2 = sin(tΩ)/sin Ω``, or ``1 - t`` and ``t`` where ``1 - cos²Ω <= 1e-16`` (colinear).

    Returns:
        ``(c1, c2)`` as fp32, shaped like ``dot``.
    """
    n1 = sq1.sqrt().clamp(min=_NORM_FLOOR)
    n2 = sq2.sqrt().clamp(min=_NORM_FLOOR)
    cos = (dot / (n1 * n2)).clamp(-1, 1)
    colinear = (1 - cos.square()) <= _EPS**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    sin = torch.where(colinear, torch.ones_like(theta), torch.sin(theta))
    c1 = torch.where(colinear, torch.full_like(cos, 1 - t), torch.sin((1 - t) * theta) / sin)
    c2 = torch.where(colinear, torch.full_like(cos, t), torch.sin(t * theta) / sin)
    return c1.float(), c2.float()


def prepare(base: torch.Tensor | None, tensors: Sequence[torch.Tensor], **given: Any) -> NuslerpState | None:
    """The statistics pass: the coefficients of every vector (None for a call with one input, which
    the executor makes per input before the joint call).

    Raises:
        MergeError: an argument nuslerp does not take.
    """
    kw = bind(_NAME, _PARAMS, given, len(tensors))
    if len(tensors) != 2:
        return None
    t = interpolation_factor(kw["weight"])
    a, b = tensors
    axis = _axis(a.shape, kw["nuslerp_row_wise"], kw["nuslerp_flatten"])
    if axis is None:
        g = gram([a, b], base)
        c1, c2 = slerp_coefficients(t, g[0, 1], g[0, 0], g[1, 1])
        return NuslerpState(c1, c2, per_row=False)
    s = _sums(base, a, b, axis)
    c1, c2 = slerp_coefficients(t, s[0], s[1], s[2])
    return NuslerpState(c1, c2, per_row=axis == -1)


def apply(
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    *,
    state: NuslerpState | None,
    offset: int,
    out: torch.Tensor | None = None,
    **given: Any,
) -> torch.Tensor:
    """``θ0 + c1 v1 + c2 v2`` on one row block at flat ``offset`` (written into ``out`` when given).

    Raises:
        MergeError: an argument nuslerp does not take, or not exactly two inputs.
    """
    bind(_NAME, _PARAMS, given, len(tensors))
    if state is None or len(tensors) != 2:
        raise MergeError(f"nuslerp interpolates exactly two models besides the base, got {len(tensors)}")
    c1, c2 = state.c1, state.c2
    if c1.dim() == 0:
        return weighted_sum(base, tensors, [float(c1), float(c2)], out=out)
    if state.per_row:
        r0 = offset // max(1, tensors[0][0].numel())
        c1, c2 = c1[r0 : r0 + tensors[0].shape[0]], c2[r0 : r0 + tensors[0].shape[0]]
    v1, v2 = tensors[0].float(), tensors[1].float()
    if base is not None:
        bb = base.float()
        v1, v2 = v1 - bb, v2 - bb
    res = torch.mul(v1, c1).addcmul_(v2, c2)
    if base is not None:
        res.add_(base.float())
    return res if out is None else out.copy_(res)


def nuslerp(
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    nuslerp_row_wise: bool = False,
    nuslerp_flatten: bool = True,
) -> torch.Tensor:
    """SLERP between two models (or their task vectors) at ``t = w2 / (w1 + w2)``.

    Args:
        base: optional θ0: the two task vectors ``θi - θ0`` are interpolated and added to it.
        tensors: θ1, θ2 of shape ``S``, any float dtype.
        weight: w1, w2.
        nuslerp_row_wise: vectors along the first axis (columns of a matrix) instead of the last.
        nuslerp_flatten: the whole tensor is one vector (default); false interpolates each vector.

    Returns:
        fp32 tensor of shape ``S``.
    """
    return on_whole_tensor(prepare, apply, base, tensors, weight=weight, nuslerp_row_wise=nuslerp_row_wise,
                           nuslerp_flatten=nuslerp_flatten)  # fmt: skip


register_method(
    name=_NAME,
    reference="https://github.com/arcee-ai/mergekit/blob/main/mergekit/merge_methods/nuslerp.py",
    formula="t = w2/(w1+w2); vi = θi-θ0 (θi without base), per tensor, row or column vector: "
    "cosΩ = <v1,v2>/(|v1||v2|); θ = θ0 + sin((1-t)Ω)/sinΩ v1 + sin(tΩ)/sinΩ v2 (lerp if colinear)",
    params=_PARAMS,
    base="optional",
    min_models=2,
    max_models=2,
    chunked=ChunkedForm(prepare, apply, takes_out=True),
)(nuslerp)
