"""Arcee Fusion: keep the other model's changes only where they matter most.

Importance of each entry: ``|θ1 - θ0|`` times the KL divergence between ``softmax(θ1)`` and
``softmax(θ0)`` along the last axis (per row; a 1-D tensor is one row). Entries whose importance
reaches ``median + 1.5 · (q3 - q1)`` (an outlier fence over the tensor's importances) take θ1's
value, the others keep the base's. The quantiles are exact order statistics (``sorted[int(q·(n-1))]``),
found by selection; the KL row factors and the fence are whole-tensor statistics, the mask is applied
block by block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmbricks.merge.methods.streaming import flat_statistic, on_whole_tensor
from lmbricks.merge.registry import ChunkedForm, bind, register_method
from lmbricks.merge.sparsify import kth_smallest

_NAME = "arcee_fusion"
_KL_EPS = 1e-8


@dataclass(frozen=True)
class FusionState:
    """The KL factor of every row (``(rows, ..., 1)``; 0-d for a 1-D tensor) and the importance fence."""

    kl: torch.Tensor
    threshold: float


def row_kl(tuned: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``Σ p log(p/q)`` along the last axis, ``p = softmax(θ1) + 1e-8``, ``q = softmax(θ0) + 1e-8`` (fp32, kept dim)."""
    p = torch.softmax(tuned.float(), dim=-1) + _KL_EPS
    q = torch.softmax(base.float(), dim=-1) + _KL_EPS
    return torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def fence(values: torch.Tensor) -> float:
    """``median + 1.5 · (q3 - q1)`` of a flat fp32 tensor, quantile ``q`` = the element of rank
    ``int(q · (n - 1))`` (0-based), computed in fp32."""
    n = values.numel()
    q1, med, q3 = (torch.tensor(kth_smallest(values, int(q * (n - 1)) + 1)) for q in (0.25, 0.5, 0.75))
    return float(med + 1.5 * (q3 - q1))


def fusion_prepare(base: torch.Tensor, tensors: Sequence[torch.Tensor], **given: Any) -> list[FusionState]:
    """The KL factor of every row, then the fence over all importances (scratch: one fp32 copy).

    Returns a list with one state (the executor's per-input protocol: its per-input statistics pass
    is then the only one).

    Raises:
        MergeError: an argument arcee_fusion does not take.
    """
    bind(_NAME, (), given, len(tensors))
    tuned = tensors[0]
    if base.dim() <= 1:  # one vector: one KL factor over all of it
        b, t = base.reshape(-1), tuned.reshape(-1)
        kl = row_kl(t, b).reshape(())
    else:
        b, t = base, tuned
        kl = torch.empty(*base.shape[:-1], 1, dtype=torch.float32)

    def importance(r0: int, r1: int) -> torch.Tensor:
        if kl.dim() == 0:
            return (t[r0:r1].float() - b[r0:r1].float()).abs_() * kl
        kl[r0:r1] = row_kl(t[r0:r1], b[r0:r1])
        return (t[r0:r1].float() - b[r0:r1].float()).abs_() * kl[r0:r1]

    return [FusionState(kl, fence(flat_statistic(b.shape, importance)))]


def fusion_apply(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], *, state: list[FusionState], offset: int, **given: Any
) -> torch.Tensor:
    """θ0 + (θ1 - θ0) · [importance >= fence] on one row block at flat ``offset``.

    Raises:
        MergeError: an argument arcee_fusion does not take.
    """
    bind(_NAME, (), given, len(tensors))
    (only,) = state
    kl = only.kl
    if kl.dim() > 0:
        r0 = offset // max(1, base[0].numel())
        kl = kl[r0 : r0 + base.shape[0]]
    b = base.float()
    delta = tensors[0].float() - b
    keep = delta.abs() * kl >= only.threshold
    return b + delta * keep


def arcee_fusion(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fuse one model into the base where its changes are important (see the module docstring).

    Args:
        base: θ0, shape ``S``.
        tensors: exactly one tensor θ1, shape ``S``, any float dtype.

    Returns:
        fp32 tensor of shape ``S``.
    """
    return on_whole_tensor(fusion_prepare, fusion_apply, base, tensors)


register_method(
    name=_NAME,
    reference="https://github.com/arcee-ai/mergekit/blob/main/mergekit/merge_methods/arcee_fusion.py",
    formula="I = |θ1-θ0| · KL(softmax θ1 || softmax θ0) per row; τ = median(I) + 1.5 (q3(I) - q1(I)); "
    "θ = θ0 + (θ1-θ0)·[I >= τ]",
    max_models=1,
    chunked=ChunkedForm(fusion_prepare, fusion_apply),
)(arcee_fusion)
