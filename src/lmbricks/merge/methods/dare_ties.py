"""DARE with TIES sign election."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.methods.dare_linear import dare
from lmbricks.merge.registry import register_method
from lmbricks.merge.task_vectors import RESCALE_MODE, common_params


def dare_ties(base: torch.Tensor, tensors: Sequence[torch.Tensor], **kw: object) -> torch.Tensor:
    """DARE drop-and-rescale, then TIES sign election and disjoint sum."""
    return dare(base, tensors, consensus=True, **kw)  # type: ignore[arg-type]


register_method(
    name="dare_ties",
    reference="https://arxiv.org/abs/2311.03099",
    formula="δi = DARE_d(θi-θ0); s = sign(Σ wi δi); θ = θ0 + λ Σ[sign(wiδi)=s] wi δi",
    params=(*common_params(normalize=False, rescale=True), RESCALE_MODE),
    stochastic=True,
)(dare_ties)
