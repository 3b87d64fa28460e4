"""TIES-merging: trim, elect sign, disjoint merge."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import ChunkedForm, register_method
from lmbricks.merge.task_vectors import TrimState, apply_trim, common_params, prepare_trim


def ties(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    lam: float = 1.0,
    normalize: bool = True,
    rescale: bool = False,
    int8_mask: bool = False,
) -> torch.Tensor:
    """Keep each task vector's top-density magnitudes, elect the sign of Σ wi δi, average agreeing entries.

    δi = topk_{density_i}(θi - θ0);  s = sign(Σ wi δi);  θ = θ0 + λ Σ_i [sign(wi δi)=s] wi δi / Σ_i [..] wi

    Args:
        base: θ0, shape ``S``.
        tensors: θi, shape ``S``.
        weight: wi.
        density: fraction kept per input (top by |δ|, per tensor as mergekit does).
        lam: λ.
        normalize: divide by the summed weights of agreeing inputs (per element).
        rescale: L1-rescale each trimmed δ to its untrimmed norm.
        int8_mask: accepted (mergekit memory option), no numerical effect.

    Returns:
        fp32 tensor of shape ``S``.
    """
    states = _prepare(base, tensors, density=density, rescale=rescale)
    return _apply(base, tensors, state=states, offset=0, weight=weight, lam=lam, normalize=normalize)


def _prepare(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    density: Sequence[float],
    rescale: bool = False,
    **_: object,
) -> list[TrimState]:
    return prepare_trim(base, tensors, density, None, rescale)


def _apply(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    state: list[TrimState],
    offset: int,
    weight: Sequence[float],
    lam: float = 1.0,
    normalize: bool = True,
    out: torch.Tensor | None = None,
    **_: object,
) -> torch.Tensor:
    return apply_trim(
        base, tensors, state, weight, offset=offset, consensus=True, normalize=normalize, lam=lam, out=out
    )


register_method(
    name="ties",
    reference="https://arxiv.org/abs/2306.01708",
    formula="δi = topk_d(θi-θ0); s = sign(Σ wi δi); θ = θ0 + λ Σ[sign(wiδi)=s] wi δi / Σ[..] wi",
    params=common_params(normalize=True, rescale=False),
    chunked=ChunkedForm(_prepare, _apply, takes_out=True),
)(ties)
