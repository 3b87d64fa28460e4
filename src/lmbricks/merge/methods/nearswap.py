"""NearSwap: take the other model's value where it lies close to the base, keep the base elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import Param, blockwise, register_method


def nearswap(base: torch.Tensor, tensors: Sequence[torch.Tensor], *, t: float) -> torch.Tensor:
    """θ = w θ1 + (1 - w) θ0 with ``w = clamp(t / max(|θ0 - θ1|, 1e-6), 0, 1)`` elementwise.

    Entries closer than ``t`` to the base take θ1's value; farther ones move by ``t`` towards it only
    in proportion (``w = t / |θ0 - θ1|``), so large differences barely change the base.

    Args:
        base: θ0.
        tensors: exactly one tensor θ1, shaped like the base.
        t: the distance scale (0 returns the base).

    Returns:
        fp32 tensor.
    """
    a = base.float()
    b = tensors[0].float()
    w = (t / (a - b).abs_().clamp_(min=1e-6)).clamp_(0, 1)
    return w * b + (1 - w) * a


_PARAMS = (Param("t", float, help="distance scale: entries within t of the base are swapped in"),)

register_method(
    name="nearswap",
    reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
    formula="w = clamp(t / max(|θ0-θ1|, 1e-6), 0, 1); θ = w θ1 + (1-w) θ0 (elementwise)",
    params=_PARAMS,
    min_models=1,
    max_models=1,
    chunked=blockwise("nearswap", nearswap, _PARAMS),
)(nearswap)
