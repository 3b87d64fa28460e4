"""Reinforced Agent Merging (RAM) and its tensor-local variant RAM+ (``ramplus_tl``).

An entry of a task vector ``δi = θi - θ0`` *contributes* when ``|δi| > ε``. RAM averages each
entry over the models that contribute to it (a task vector alone on an entry keeps its full value,
shared entries are not diluted by the models that left them unchanged). RAM+ also scales each model's
unique entries up by ``λi = 1 + r · clamp(ρi, 0, α)``, ``ρi`` = its shared over its unique entries
in this tensor. RAM is elementwise (row blocks as they come); RAM+ counts per tensor first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmbricks.merge.methods.streaming import on_whole_tensor
from lmbricks.merge.registry import ChunkedForm, Param, bind, blockwise, register_method
from lmbricks.merge.task_vectors import row_blocks

_REFERENCE = "https://arxiv.org/abs/2601.13572"
EPS = Param("epsilon", float, default=1e-5, help="|δ| above which an entry contributes", bounds="[0, inf)")


def _contributions(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(δ (k, n) fp32, contributes (k, n) bool, count (n,) per entry)`` for flattened inputs."""
    b = base.float().reshape(1, -1)
    deltas = torch.stack([t.float().reshape(-1) for t in tensors]) - b
    contributes = deltas.abs() > epsilon
    return deltas, contributes, contributes.sum(0)


def _merge(base: torch.Tensor, tensors: Sequence[torch.Tensor], epsilon: float, lam: Sequence[float]) -> torch.Tensor:
    """``θ0 + Σi δi [contributes] (λi [count = 1] + [count > 1] / count)``, shaped like the base."""
    deltas, contributes, count = _contributions(base, tensors, epsilon)
    unique = count == 1
    per_entry = torch.where(unique, 0.0, 1.0 / count.clamp(min=1).float())  # shared entries: the mean
    factors = torch.tensor(list(lam), dtype=torch.float32)[:, None] * unique + per_entry  # (k, n)
    merged = (deltas * contributes * factors).sum(0)
    return (base.float().reshape(-1) + merged).reshape(base.shape)


def ram(base: torch.Tensor, tensors: Sequence[torch.Tensor], *, epsilon: float = 1e-5) -> torch.Tensor:
    """θ = θ0 + Σi δi [|δi| > ε] / max(1, #{i : |δi| > ε}), entry by entry.

    Args:
        base: θ0, shape ``S``.
        tensors: θi, shape ``S``, any float dtype.
        epsilon: |δ| above which an entry contributes.

    Returns:
        fp32 tensor of shape ``S``.
    """
    return _merge(base, tensors, epsilon, [1.0] * len(tensors))


_RAM_PARAMS = (EPS,)
register_method(
    name="ram",
    reference=_REFERENCE,
    formula="δi = θi-θ0, ci = [|δi| > ε]; θ = θ0 + Σ ci δi / max(1, Σ ci) (elementwise)",
    params=_RAM_PARAMS,
    chunked=blockwise("ram", ram, _RAM_PARAMS),
)(ram)


_PLUS_PARAMS = (
    Param("r", float, default=0.1, help="strength of the boost of each model's unique entries"),
    Param("alpha", float, default=0.2, help="largest shared/unique ratio the boost counts", bounds="[0, inf)"),
    EPS,
)


@dataclass(frozen=True)
class RamPlusState:
    """The per-model boost ``λi`` of unique entries (from whole-tensor counts)."""

    lam: tuple[float, ...]


def ramplus_boost(counts: Sequence[tuple[int, int]], r: float, alpha: float, epsilon: float) -> list[float]:
    """``λi = 1 + r · clamp(shared_i / max(unique_i, ε), 0, α)`` from each model's (shared, unique) counts.

    With ``ε = 0`` and no unique entries the ratio is its limit (α if anything is shared, else 0);
    ``λi`` then multiplies nothing.
    """
    out = []
    for s, u in counts:
        d = max(u, epsilon)
        ratio = s / d if d > 0 else (alpha if s > 0 else 0.0)
        out.append(1 + r * min(max(ratio, 0.0), alpha))
    return out


def ramplus_prepare(base: torch.Tensor, tensors: Sequence[torch.Tensor], **given: Any) -> RamPlusState:
    """Count each model's shared and unique entries over the whole tensor (one pass over row blocks).

    Raises:
        MergeError: an argument ramplus_tl does not take.
    """
    kw = bind("ramplus_tl", _PLUS_PARAMS, given, len(tensors))
    if len(tensors) == 1:  # nothing is shared: λ = 1, no pass needed
        return RamPlusState((1.0,))
    shared = torch.zeros(len(tensors), dtype=torch.int64)
    unique = torch.zeros(len(tensors), dtype=torch.int64)
    view = (lambda t: t.reshape(-1)) if base.dim() <= 1 else (lambda t: t)
    for r0, r1 in row_blocks(view(base).shape):
        _d, contributes, count = _contributions(view(base)[r0:r1], [view(t)[r0:r1] for t in tensors], kw["epsilon"])
        shared += (contributes & (count > 1)).sum(1)
        unique += (contributes & (count == 1)).sum(1)
    counts = list(zip(shared.tolist(), unique.tolist(), strict=True))
    return RamPlusState(tuple(ramplus_boost(counts, kw["r"], kw["alpha"], kw["epsilon"])))


def ramplus_apply(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], *, state: RamPlusState, offset: int, **given: Any
) -> torch.Tensor:
    """RAM+ on one row block given the boosts.

    Raises:
        MergeError: an argument ramplus_tl does not take.
    """
    del offset  # the boosts hold for the whole tensor
    kw = bind("ramplus_tl", _PLUS_PARAMS, given, len(tensors))
    return _merge(base, tensors, kw["epsilon"], state.lam)


def ramplus_tl(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    r: float = 0.1,
    alpha: float = 0.2,
    epsilon: float = 1e-5,
) -> torch.Tensor:
    """RAM with each model's unique entries boosted by ``λi`` (see :func:`ramplus_boost`), per tensor.

    Args:
        base: θ0, shape ``S``.
        tensors: θi, shape ``S``, any float dtype.
        r: boost strength.
        alpha: cap of the shared/unique ratio.
        epsilon: |δ| above which an entry contributes.

    Returns:
        fp32 tensor of shape ``S``.
    """
    return on_whole_tensor(ramplus_prepare, ramplus_apply, base, tensors, r=r, alpha=alpha, epsilon=epsilon)


register_method(
    name="ramplus_tl",
    reference=_REFERENCE,
    formula="as ram, unique entries (Σ ci = 1) times λi = 1 + r·clamp(shared_i/max(unique_i, ε), 0, α), "
    "counts per tensor",
    params=_PLUS_PARAMS,
    chunked=ChunkedForm(ramplus_prepare, ramplus_apply),
)(ramplus_tl)
