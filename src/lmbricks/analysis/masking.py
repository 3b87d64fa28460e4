"""Per-token neuron masking: keep the top neurons by a metric, or those above a CETT threshold.

Pure tensor functions (no model, no I/O). Metrics of neuron ``i`` for one token:

* ``abs``:  ``|a_i|``;
* ``norm``: ``|a_i| * ||W_down[:, i]||``, the norm of the neuron's contribution to the FFN output.

CETT (cumulative errors of tail truncation, ReLU^2 Wins, arXiv 2402.03804): with a threshold ``t``
on the norm metric, the *tail* is the neurons below ``t``; CETT is ``||sum_tail a_i W_down[:, i]||
/ ||y||``. :func:`cett_threshold` finds, per layer, the threshold whose mean CETT over calibration
tokens equals a target (0.2 by default); the resulting sparsity is the fraction of neurons below it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from lmbricks.errors import ConfigError

Metric = Literal["abs", "norm"]
METRICS: tuple[str, ...] = ("abs", "norm")


def neuron_scores(a: Tensor, down_norms: Tensor, metric: Metric) -> Tensor:
    """Per-token importance of each neuron.

    Args:
        a: (..., I) intermediate activations.
        down_norms: (I,) column norms of ``W_down``.
        metric: ``abs`` or ``norm``.

    Returns:
        (..., I) fp32 scores.
    """
    if metric == "abs":
        return a.float().abs()
    if metric == "norm":
        return a.float().abs() * down_norms.to(a.device, torch.float32)
    raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")


def keep_count(width: int, sparsity: float) -> int:
    """Neurons kept per token when a fraction ``sparsity`` of ``width`` is masked (rounded)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ConfigError(f"sparsity must be in [0, 1], got {sparsity}")
    return int(round((1.0 - sparsity) * width))


def topk_mask(scores: Tensor, keep: int) -> Tensor:
    """Boolean mask of exactly ``keep`` highest-scoring neurons per token.

    Args:
        scores: (..., I).
        keep: neurons to keep per token, 0 <= keep <= I.

    Returns:
        (..., I) bool, ``keep`` True entries per row (ties broken by ``topk``'s order).
    """
    width = scores.shape[-1]
    if not 0 <= keep <= width:
        raise ConfigError(f"keep must be in [0, {width}], got {keep}")
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if keep == width:
        return mask.fill_(True)
    if keep > 0:
        idx = scores.topk(keep, dim=-1, sorted=False).indices  # (..., keep)
        mask.scatter_(-1, idx, True)
    return mask


def mask_topk(a: Tensor, down_norms: Tensor, metric: Metric, sparsity: float) -> Tensor:
    """``a`` with all but the top ``(1 - sparsity)`` neurons per token set to zero."""
    keep = keep_count(a.shape[-1], sparsity)
    if keep == a.shape[-1]:
        return a
    return a * topk_mask(neuron_scores(a, down_norms, metric), keep).to(a.dtype)


def mask_threshold(a: Tensor, down_norms: Tensor, threshold: float) -> Tensor:
    """``a`` with the neurons whose norm metric is below ``threshold`` set to zero."""
    return a * (neuron_scores(a, down_norms, "norm") >= threshold).to(a.dtype)


def _tail_ratio(a: Tensor, w: Tensor, scores: Tensor, full: Tensor, threshold: float) -> Tensor:
    """(N,) ``||tail output|| / ||full output||`` given precomputed fp32 scores and full-output norms."""
    part = ((a * (scores < threshold)) @ w.T).norm(dim=-1)  # (N,)
    return torch.where(full > 0, part / full.clamp_min(1e-30), torch.zeros_like(full))


def cett(a: Tensor, w_down: Tensor, threshold: float) -> Tensor:
    """Per-token CETT of a threshold: ``||tail output|| / ||full output||``.

    Args:
        a: (N, I) activations.
        w_down: (H, I) down projection.
        threshold: on the norm metric.

    Returns:
        (N,) fp32 ratios (0 where the FFN output is zero).
    """
    a = a.detach().float()
    w = w_down.detach().float()
    scores = a.abs() * w.norm(dim=0)
    return _tail_ratio(a, w, scores, (a @ w.T).norm(dim=-1), threshold)


def cett_threshold(a: Tensor, w_down: Tensor, target: float = 0.2, steps: int = 24) -> float:
    """The norm-metric threshold whose mean CETT over the rows of ``a`` equals ``target``.

    Mean CETT grows monotonically with the threshold (a larger tail), so a bisection on
    ``log(threshold)`` between the smallest and largest metric value finds it. The full output
    norms and the scores are computed once; each step costs one (N, I) x (I, H) matmul.

    Args:
        a: (N, I) calibration activations of one layer.
        w_down: (H, I) that layer's down projection.
        target: the CETT to hold, in (0, 1).
        steps: bisection steps (24 halvings of the log range: far below the noise of the mean).

    Returns:
        The threshold (0.0 if even the smallest positive threshold overshoots the target).
    """
    if not 0.0 < target < 1.0:
        raise ConfigError(f"CETT target must be in (0, 1), got {target}")
    a = a.detach().float()
    w = w_down.detach().float()
    scores = a.abs() * w.norm(dim=0)  # (N, I) norm metric
    full = (a @ w.T).norm(dim=-1)  # (N,)
    positive = scores[scores > 0]
    if positive.numel() == 0:
        return 0.0

    def mean_cett(log_t: float) -> float:
        return float(_tail_ratio(a, w, scores, full, math.exp(log_t)).mean())

    lo = math.log(float(positive.min()))
    hi = math.log(float(scores.max())) + 1e-3
    if mean_cett(lo) > target:
        return 0.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if mean_cett(mid) > target:
            hi = mid
        else:
            lo = mid
    return math.exp(lo)
