"""Multi-SLERP: barycentric interpolation of several models on a hypersphere."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.errors import MergeError
from lmbricks.merge.methods.linear import WEIGHT, check_weights
from lmbricks.merge.registry import Param, register_method


def multislerp(
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    normalize_weights: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Project (θi - θ0) onto the unit sphere, average in the tangent space at their weighted mean
    direction, map back with the exponential map and scale by the weighted mean norm.

    Args:
        base: optional θ0 (the sphere's centre); None centres at the origin.
        tensors: θi.
        weight: wi.
        normalize_weights: divide the weights by their sum.
        eps: numerical floor.

    Returns:
        fp32 tensor.

    Raises:
        MergeError: the weighted mean direction is zero (three or more inputs that cancel out, e.g.
            antipodal ones with balancing weights); with two inputs the linear mean is returned.
    """
    if len(tensors) == 1:
        return tensors[0].float()
    shape = tensors[0].shape
    x = torch.stack([t.float().reshape(-1) for t in tensors])  # (k, n)
    if base is not None:
        x -= base.float().reshape(1, -1)
    w = _coefficients(weight, normalize_weights)
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (k, 1)
    if bool((norms <= eps).all()):
        # every input equals the centre (the base, or zero): the mean on the sphere is the centre
        return base.float().clone() if base is not None else torch.zeros(shape)
    unit = x / (norms + eps)
    mean = (unit * w[:, None]).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if len(tensors) == 2:
            res = x[0] * w[0] + x[1] * w[1]
            out = res.reshape(shape)
            return out + base.float() if base is not None else out
        raise MergeError(
            "multislerp: the weighted mean direction of the inputs is zero (they cancel out), so no point on "
            "the sphere is their mean; change the weights or use linear"
        )
    result = _exp_map(unit, mean / mean_norm, w, eps) * (norms.squeeze(1) * w).sum()
    out = result.reshape(shape)
    return out + base.float() if base is not None else out


def _coefficients(weight: Sequence[float], normalize: bool) -> torch.Tensor:
    """The weights as fp32, divided by their sum in float64 first (weights tiny enough to vanish in
    float32 still normalise; a zero sum is refused when the recipe is planned, by check_weights)."""
    coeffs = [float(x) for x in weight]
    if normalize:
        total = sum(coeffs)
        coeffs = [x / total for x in coeffs]
    return torch.tensor(coeffs, dtype=torch.float32)


def _exp_map(unit: torch.Tensor, mean: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """The weighted mean of the unit rows ``unit`` ``(k, n)`` in the tangent space at the unit vector
    ``mean`` ``(n,)``, mapped back onto the sphere."""
    dots = unit @ mean  # (k,)
    tangent = unit - dots[:, None] * mean[None, :]
    tangent_mean = (tangent * w[:, None]).sum(0)
    tnorm = torch.linalg.vector_norm(tangent_mean) + eps
    return mean * torch.cos(tnorm) + tangent_mean * (torch.sin(tnorm) / tnorm)


register_method(
    name="multislerp",
    reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    formula="ui = (θi-θ0)/|θi-θ0|; m = normalize(Σ wi ui); θ = θ0 + Σwi|θi-θ0| · exp_m(Σ wi (ui - <ui,m> m))",
    params=(
        WEIGHT,
        Param("normalize_weights", bool, default=True, help="divide weights by their sum"),
        Param("eps", float, default=1e-8, help="numerical floor (a small positive number)", bounds="(0, 0.001]"),
    ),
    base="optional",
    check=lambda kwargs: check_weights(kwargs, "normalize_weights"),
)(multislerp)
