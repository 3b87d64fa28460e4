"""The pure maths of ReLU-fication: ProSparse's progressive L1 factor and the FATReLU threshold."""

from __future__ import annotations

import math

from torch import Tensor


def l1_factor(step: int, factor: float, increase_steps: int) -> float:
    """The L1 factor of optimizer step ``step`` (0-based): ProSparse's sine-shaped progressive increase.

    lambda(s) = factor * sin(pi/2 * min(1, (s + 1) / increase_steps)): it rises smoothly from near 0
    to ``factor`` over ``increase_steps`` steps and stays there (increase_steps 0: ``factor`` at once).

    Args:
        step: the optimizer step, >= 0.
        factor: the final factor, >= 0.
        increase_steps: steps of the increase, >= 0.

    Returns:
        The factor, in [0, factor].
    """
    if increase_steps <= 0:
        return factor
    return factor * math.sin(math.pi / 2 * min(1.0, (step + 1) / increase_steps))


def threshold_for_sparsity(gates: Tensor, target: float) -> float:
    """The FATReLU threshold T >= 0 that zeroes a ``target`` fraction of ``gates`` (where g <= T).

    Args:
        gates: (N,) gate pre-activations sampled on calibration text.
        target: the wanted fraction of exact zeros, in (0, 1).

    Returns:
        T, the ``target`` quantile of the gates, at least 0 (ReLU already zeroes g <= 0).
    """
    g = gates.detach().float().flatten().sort().values
    k = min(g.numel() - 1, max(0, math.ceil(target * g.numel()) - 1))
    return max(0.0, float(g[k]))


def zero_fraction(a: Tensor) -> float:
    """The fraction of exact zeros in ``a`` (any shape)."""
    return float((a == 0).sum()) / max(1, a.numel())


__all__ = ["l1_factor", "threshold_for_sparsity", "zero_fraction"]
