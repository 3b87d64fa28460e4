"""DARE: drop and rescale task-vector entries at random, then add (linear)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import register_method
from lmbricks.merge.task_vectors import RESCALE_MODE, combine_deltas, common_params, random_drop


def dare(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    lam: float = 1.0,
    normalize: bool = False,
    rescale: bool = True,
    rescale_mode: str = "l1",
    int8_mask: bool = False,
    consensus: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """δi = drop_p(θi - θ0) with keep probability p = density, rescaled; θ = θ0 + λ Σ wi δi.

    Args:
        base: θ0.
        tensors: θi.
        weight: wi.
        density: keep probability per input (1 keeps δ unchanged).
        lam: λ.
        normalize: divide by the summed weights.
        rescale: rescale kept entries (``rescale_mode``: l1 as mergekit, or 1/p as the paper).
        consensus: elect signs as TIES does (the ``dare_ties`` method).
        generator: randomness (the executor seeds it per tensor from the recipe's ``seed``).

    Returns:
        fp32 tensor.
    """
    b = base.float()
    deltas = []
    for t, d in zip(tensors, density, strict=False):
        delta = t.float() - b
        if d < 1:
            delta = random_drop(delta, d, rescale=rescale, rescale_mode=rescale_mode, generator=generator)
        deltas.append(delta)
    return combine_deltas(b, deltas, weight, consensus=consensus, normalize=normalize, lam=lam)


def dare_linear(base: torch.Tensor, tensors: Sequence[torch.Tensor], **kw: object) -> torch.Tensor:
    """DARE without sign election: θ = θ0 + λ Σ wi drop_p(θi - θ0)."""
    return dare(base, tensors, consensus=False, **kw)  # type: ignore[arg-type]


register_method(
    name="dare_linear",
    reference="https://arxiv.org/abs/2311.03099",
    formula="δi = m ⊙ (θi-θ0) · r, m ~ Bernoulli(d), r = |δ|₁/|m⊙δ|₁ (or 1/d); θ = θ0 + λ Σ wi δi",
    params=(*common_params(normalize=False, rescale=True), RESCALE_MODE),
    stochastic=True,
)(dare_linear)
