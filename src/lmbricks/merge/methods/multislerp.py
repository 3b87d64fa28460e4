"""Multi-SLERP: barycentric interpolation of several models on a hypersphere."""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
        ValueError: the weighted mean direction is zero (antipodal inputs with balancing weights).
    """
    if len(tensors) == 1:
        return tensors[0].float()
    shape = tensors[0].shape
    x = torch.stack([t.float().reshape(-1) for t in tensors])  # (k, n)
    if base is not None:
        x -= base.float().reshape(1, -1)
    w = torch.tensor(list(weight), dtype=torch.float32)
    if normalize_weights:
        w = w / w.sum()
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (k, 1)
    unit = x / (norms + eps)
    mean = (unit * w[:, None]).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if len(tensors) == 2:
            res = x[0] * w[0] + x[1] * w[1]
            out = res.reshape(shape)
            return out + base.float() if base is not None else out
        raise ValueError("multislerp: the weighted mean direction is zero (antipodal inputs?)")
    mean = mean / mean_norm
    dots = unit @ mean  # (k,)
    tangent = unit - dots[:, None] * mean[None, :]
    tangent_mean = (tangent * w[:, None]).sum(0)
    tnorm = torch.linalg.vector_norm(tangent_mean) + eps
    result = mean * torch.cos(tnorm) + tangent_mean * (torch.sin(tnorm) / tnorm)
    result = result * (norms.squeeze(1) * w).sum()
    out = result.reshape(shape)
    return out + base.float() if base is not None else out


register_method(
    name="multislerp",
    reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    formula="ui = (θi-θ0)/|θi-θ0|; m = normalize(Σ wi ui); θ = θ0 + Σwi|θi-θ0| · exp_m(Σ wi (ui - <ui,m> m))",
    params=(
        Param("weight", float, per_input=True, help="weight of each model"),
        Param("normalize_weights", bool, default=True, help="divide weights by their sum"),
        Param("eps", float, default=1e-8, help="numerical floor"),
    ),
    base="optional",
)(multislerp)
