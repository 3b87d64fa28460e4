"""Model Breadcrumbs with TIES sign election."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.methods.breadcrumbs import GAMMA, _apply_with, _prepare, breadcrumbs
from lmbricks.merge.registry import ChunkedForm, register_method
from lmbricks.merge.task_vectors import common_params


def breadcrumbs_ties(base: torch.Tensor, tensors: Sequence[torch.Tensor], **kw: object) -> torch.Tensor:
    """Breadcrumbs trimming, then TIES sign election and disjoint sum (see ``breadcrumbs``)."""
    return breadcrumbs(base, tensors, consensus=True, **kw)  # type: ignore[arg-type]


register_method(
    name="breadcrumbs_ties",
    reference="https://arxiv.org/abs/2312.06795",
    formula="δi = crumbs_{d,γ}(θi-θ0); s = sign(Σ wi δi); θ = θ0 + λ Σ[sign(wiδi)=s] wi δi",
    params=(*common_params(normalize=False, rescale=False), GAMMA),
    chunked=ChunkedForm(_prepare, _apply_with(True)),
)(breadcrumbs_ties)
