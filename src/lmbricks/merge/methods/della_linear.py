"""DELLA without sign election."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.methods.della import EPSILON, check_epsilon, della_merge
from lmbricks.merge.registry import register_method
from lmbricks.merge.task_vectors import RESCALE_MODE, common_params


def della_linear(base: torch.Tensor, tensors: Sequence[torch.Tensor], **kw: object) -> torch.Tensor:
    """MagPrune each task vector, then θ = θ0 + λ Σ wi δi."""
    kw.setdefault("normalize", False)
    return della_merge(base, tensors, consensus=False, **kw)  # type: ignore[arg-type]


register_method(
    name="della_linear",
    reference="https://arxiv.org/abs/2406.11617",
    formula="δi = MagPrune_{d,ε}(θi-θ0); θ = θ0 + λ Σ wi δi",
    params=(*common_params(normalize=False, rescale=True), EPSILON, RESCALE_MODE),
    stochastic=True,
    check=check_epsilon,
)(della_linear)
