"""Spherical linear interpolation between the base and one other model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lmbricks.merge.registry import Param, register_method

DOT_THRESHOLD = 0.9995


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SLERP of two whole tensors (treated as flat vectors), falling back to lerp when nearly colinear.

    θ = sin((1-t)Ω)/sin Ω · v0 + sin(tΩ)/sin Ω · v1,  cos Ω = <v0/|v0|, v1/|v1|>;  lerp if |cos Ω| > 0.9995.

    Args:
        t: interpolation factor (0 gives ``v0``, 1 gives ``v1``).
        v0, v1: tensors of one shape, any float dtype.
        eps: norms below it count as 1 (a zero tensor).

    Returns:
        fp32 tensor.
    """
    a = v0.float()
    b = v1.float()
    na = float(torch.linalg.vector_norm(a))
    nb = float(torch.linalg.vector_norm(b))
    na = na if na > eps else 1.0
    nb = nb if nb > eps else 1.0
    dot = float(torch.dot(a.reshape(-1), b.reshape(-1))) / (na * nb)
    dot = max(-1.0, min(1.0, dot))
    if abs(dot) > DOT_THRESHOLD:
        ca, cb = 1 - t, t
    else:
        omega = math.acos(dot)
        so = math.sin(omega)
        ca, cb = math.sin((1 - t) * omega) / so, math.sin(t * omega) / so
    out = a.mul(ca) if a is not v0 else a * ca
    return out.add_(b, alpha=cb)


def slerp(base: torch.Tensor, tensors: Sequence[torch.Tensor], *, t: float) -> torch.Tensor:
    """SLERP from the base (t=0) to the other model (t=1).

    Args:
        base: θ0.
        tensors: exactly one tensor θ1.
        t: interpolation factor (a gradient list interpolates it across layers).

    Returns:
        fp32 tensor.
    """
    return slerp_tensors(t, base, tensors[0])


register_method(
    name="slerp",
    reference="https://en.wikipedia.org/wiki/Slerp",
    formula="θ = sin((1-t)Ω)/sinΩ θ0 + sin(tΩ)/sinΩ θ1, cosΩ = <θ0,θ1>/(|θ0||θ1|); lerp if |cosΩ|>0.9995",
    params=(Param("t", float, help="interpolation factor: 0 = base, 1 = the other model"),),
    min_models=1,
    max_models=1,
)(slerp)
