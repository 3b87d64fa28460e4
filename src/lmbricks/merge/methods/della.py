"""DELLA: magnitude-ranked random drop (MagPrune), then TIES sign election."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmbricks.merge.registry import Param, register_method
from lmbricks.merge.sparsify import della_probabilities
from lmbricks.merge.task_vectors import RESCALE_MODE, combine_deltas, common_params, random_drop

EPSILON = Param(
    "epsilon", float, per_input=True, default=0.15, help="half-width of the keep-probability range", bounds="[0, 1)"
)


def check_epsilon(kwargs: dict[str, Any]) -> str | None:
    """Keep probabilities ``density ± epsilon`` must be probabilities (for inputs with density < 1)."""
    for d, e in zip(kwargs.get("density", []), kwargs.get("epsilon", []), strict=False):
        if d < 1 and not (d - e > 0 and d + e < 1):
            return f"density ± epsilon must lie in (0, 1), got density {d} and epsilon {e}"
    return None


def della_merge(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    epsilon: Sequence[float],
    lam: float = 1.0,
    normalize: bool = True,
    rescale: bool = True,
    rescale_mode: str = "l1",
    int8_mask: bool = False,
    consensus: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MagPrune: within each row, keep probability rises linearly with the |δ| rank from d-ε to d+ε.

    Args:
        base: θ0.
        tensors: θi.
        weight: wi.
        density: mean keep probability d.
        epsilon: ε.
        lam: λ.
        normalize: divide by the summed (agreeing) weights.
        rescale: rescale kept entries (l1 as mergekit, or 1/p_ij as the paper).
        consensus: TIES sign election (``della``) or not (``della_linear``).
        generator: randomness.

    Returns:
        fp32 tensor.
    """
    b = base.float()
    deltas = []
    for t, d, eps in zip(tensors, density, epsilon, strict=False):
        delta = t.float() - b
        if d < 1:
            probs = della_probabilities(delta, d, eps).reshape(delta.shape)
            delta = random_drop(delta, probs, rescale=rescale, rescale_mode=rescale_mode, generator=generator)
        deltas.append(delta)
    return combine_deltas(b, deltas, weight, consensus=consensus, normalize=normalize, lam=lam)


def della(base: torch.Tensor, tensors: Sequence[torch.Tensor], **kw: object) -> torch.Tensor:
    """DELLA: MagPrune each task vector, elect signs, disjoint mean."""
    return della_merge(base, tensors, consensus=True, **kw)  # type: ignore[arg-type]


register_method(
    name="della",
    reference="https://arxiv.org/abs/2406.11617",
    formula="pij = d-ε+2ε·rank(|δij|)/(n-1); δi = m⊙δ·r, m~Bernoulli(p); TIES sign election; θ0 + λΔ",
    params=(*common_params(normalize=True, rescale=True), EPSILON, RESCALE_MODE),
    stochastic=True,
    check=check_epsilon,
)(della)
