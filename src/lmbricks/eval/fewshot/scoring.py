"""Accuracy with Wilson score intervals (well behaved at small n and at 0 or 100 %)."""

from __future__ import annotations

import math


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default).

    Args:
        correct: successes k.
        n: trials (0 gives the uninformative (0, 1)).
        z: the normal quantile.

    Returns:
        (low, high) in [0, 1].
    """
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
