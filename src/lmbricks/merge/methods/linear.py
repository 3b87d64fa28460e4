"""Linear averaging: uniform soups, WARM, Model Ratatouille."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmbricks.merge.registry import Param, blockwise, register_method
from lmbricks.merge.task_vectors import fused_ok


def linear(
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    normalize: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean of the inputs: θ = Σ wi θi / Σ wi (no division when normalize is false).

    Args:
        base: unused (linear treats every model as a term).
        tensors: θi, same shape ``S``, any float dtype.
        weight: wi, one per tensor.
        normalize: divide by Σ wi.
        out: optional destination (shape ``S``, any float dtype); the result is written there.

    Returns:
        fp32 tensor of shape ``S`` (or ``out``).
    """
    del base  # every model is a term
    coeffs = list(weight)
    if normalize:
        total = float(sum(coeffs))
        if total == 0:  # refused when the recipe is planned (check_weights); kept for direct calls
            raise ValueError("linear: weights sum to zero, cannot normalize")
        coeffs = [w / total for w in coeffs]
    if fused_ok(*tensors):
        from lmbricks.merge import kernels

        return kernels.combine_block(None, list(tensors), coeffs, out=out)
    res = tensors[0].to(torch.float32, copy=True)
    res.mul_(coeffs[0])
    for t, w in zip(tensors[1:], coeffs[1:], strict=False):
        res.add_(t, alpha=w)  # bf16 inputs are upcast inside the kernel, no fp32 copy
    return res if out is None else out.copy_(res)


def check_weights(kwargs: dict[str, Any], normalize_key: str = "normalize") -> str | None:
    """Normalising divides by the sum of the weights: it must not be zero."""
    if kwargs.get(normalize_key) and float(sum(kwargs["weight"])) == 0:
        return (
            f"the weights {kwargs['weight']} sum to zero, so {normalize_key} cannot divide by them; "
            f"change the weights or set {normalize_key}: false"
        )
    return None


#: The per-input weight of the methods that average models (linear, multislerp).
WEIGHT = Param("weight", float, per_input=True, help="weight of each model")
_PARAMS = (WEIGHT, Param("normalize", bool, default=True, help="divide by the sum of weights"))


register_method(
    name="linear",
    reference="https://arxiv.org/abs/2203.05482",
    formula="θ = Σ wi θi / Σ wi",
    params=_PARAMS,
    base="none",
    chunked=blockwise("linear", linear, _PARAMS, takes_out=True),
    check=check_weights,
)(linear)
