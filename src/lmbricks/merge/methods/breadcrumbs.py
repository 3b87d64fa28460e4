"""Model Breadcrumbs: drop the largest (outliers) and smallest entries of each task vector."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import ChunkedForm, Param, register_method
from lmbricks.merge.task_vectors import TrimState, apply_trim, common_params, prepare_trim

GAMMA = Param("gamma", float, per_input=True, default=0.01, help="fraction of largest |δ| dropped", bounds="[0, 1]")


def breadcrumbs(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    gamma: Sequence[float],
    lam: float = 1.0,
    normalize: bool = False,
    rescale: bool = False,
    int8_mask: bool = False,
    consensus: bool = False,
) -> torch.Tensor:
    """θ = θ0 + λ Σ wi crumbs(θi - θ0): keep ranks [n - d·n - γ·n, n - γ·n) of |δ|.

    The smallest entries and the top γ fraction (outliers) are dropped.

    Args:
        base: θ0.
        tensors: θi.
        weight: wi.
        density: fraction kept.
        gamma: fraction of the largest magnitudes removed.
        lam: λ.
        normalize: divide by Σ wi.
        rescale: L1-rescale each trimmed δ.
        consensus: elect signs as TIES does (the ``breadcrumbs_ties`` method).

    Returns:
        fp32 tensor.
    """
    states = prepare_trim(base, tensors, density, gamma, rescale)
    return apply_trim(base, tensors, states, weight, offset=0, consensus=consensus, normalize=normalize, lam=lam)


def _prepare(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    density: Sequence[float],
    gamma: Sequence[float],
    rescale: bool = False,
    **_: object,
) -> list[TrimState]:
    return prepare_trim(base, tensors, density, gamma, rescale)


def _apply_with(consensus: bool):
    def apply(
        base: torch.Tensor,
        tensors: Sequence[torch.Tensor],
        *,
        state: list[TrimState],
        offset: int,
        weight: Sequence[float],
        lam: float = 1.0,
        normalize: bool = False,
        **_: object,
    ) -> torch.Tensor:
        return apply_trim(
            base, tensors, state, weight, offset=offset, consensus=consensus, normalize=normalize, lam=lam
        )

    return apply


register_method(
    name="breadcrumbs",
    reference="https://arxiv.org/abs/2312.06795",
    formula="δi = crumbs_{d,γ}(θi-θ0); θ = θ0 + λ Σ wi δi",
    params=(*common_params(normalize=False, rescale=False), GAMMA),
    chunked=ChunkedForm(_prepare, _apply_with(False)),
)(breadcrumbs)
