"""Task arithmetic: add weighted task vectors to the base."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import ChunkedForm, register_method
from lmbricks.merge.task_vectors import combine_deltas, common_params


def task_arithmetic(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float] | None = None,
    lam: float = 1.0,
    normalize: bool = False,
    rescale: bool = False,
    int8_mask: bool = False,
) -> torch.Tensor:
    """θ = θ0 + λ Σ wi (θi - θ0)  (divided by Σ wi when normalize).

    ``density`` and ``rescale`` are accepted for recipe compatibility and have no effect.

    Args:
        base: θ0, shape ``S``.
        tensors: θi, shape ``S``.
        weight: wi.
        lam: λ.
        normalize: divide by Σ wi.

    Returns:
        fp32 tensor of shape ``S``.
    """
    b = base.float()
    deltas = [t.float() - b for t in tensors]
    return combine_deltas(b, deltas, weight, consensus=False, normalize=normalize, lam=lam)


def _apply(base: torch.Tensor, tensors: Sequence[torch.Tensor], *, state: None, offset: int, **kw: object):
    return task_arithmetic(base, tensors, **kw)  # type: ignore[arg-type]


register_method(
    name="task_arithmetic",
    reference="https://arxiv.org/abs/2212.04089",
    formula="θ = θ0 + λ Σ wi (θi - θ0)",
    params=common_params(normalize=False, rescale=False),
    chunked=ChunkedForm(lambda *a, **k: None, _apply),
)(task_arithmetic)
