"""Selection rules of MoEfied routers: (T, E) scores -> the experts each token runs.

A rule returns slots in the layout of :class:`lmbricks.moe.types.RouterOutput`: ``indices``
(T, k) long, the best-scored expert first, and ``mask`` (T, k) bool, the slots really routed
(None when all are). Two rules:

* :func:`top_k_slots`: the K highest scores of every token;
* :func:`share_slots` (dynamic K): per token the fewest experts whose share of the predicted mass
  reaches a threshold (top-p routing); k is the largest count over the tokens, and the shorter
  rows are masked.

:func:`routed_mask` and :func:`routed_gates` turn slots back into (T, E) tensors (what the sparse
runtime and the training path of :class:`~lmbricks.moefy.runtime.MoefiedFFN` consume);
:func:`topk_mask` and :func:`dynamic_mask` are the two rules in (T, E) form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.moe.types import RouterOutput


def top_k_slots(scores: Tensor, k: int) -> Tensor:
    """(T, E) scores -> (T, k) long indices of the ``k`` highest, highest first."""
    if not 1 <= k <= scores.shape[-1]:
        raise ConfigError(f"top_k must be in [1, {scores.shape[-1]}], got {k}")
    return scores.topk(k, dim=-1).indices


def share_slots(probs: Tensor, threshold: float, min_k: int = 1) -> tuple[Tensor, Tensor]:
    """Per token, the fewest experts whose share of the predicted mass reaches ``threshold``.

    Args:
        probs: (T, E) non-negative predicted mass (e.g. the softmax of the router's scores).
        threshold: share in (0, 1].
        min_k: at least this many experts.

    Returns:
        ``(indices, mask)``, both (T, k) with k the largest count over the tokens: experts by
        decreasing share, and which of those slots are routed.
    """
    share = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
    sorted_share, order = share.sort(-1, descending=True)
    before = sorted_share.cumsum(-1) - sorted_share  # mass of the experts ranked above
    keep = before < threshold
    keep[..., :min_k] = True
    k = max(int(keep.sum(-1).max()), 1) if keep.numel() else min_k  # kept slots form a prefix of each row
    return order[..., :k], keep[..., :k]


def routed_mask(out: RouterOutput, num_experts: int) -> Tensor:
    """(T, E) bool: the experts each token runs, from a router's slots."""
    dense = torch.zeros(out.indices.shape[0], num_experts, dtype=torch.bool, device=out.indices.device)
    if out.mask is None:
        return dense.scatter_(1, out.indices, True)
    return dense.scatter_(1, out.indices, out.mask.bool())  # each token's slots name distinct experts


def routed_gates(out: RouterOutput, num_experts: int) -> Tensor:
    """(T, E) fp32 gate of each (token, expert): the slot's weight where routed, else 0."""
    weights = out.weights if out.mask is None else out.weights * out.mask
    dense = torch.zeros(out.indices.shape[0], num_experts, dtype=weights.dtype, device=weights.device)
    return dense.scatter(1, out.indices, weights)  # out of place: the gradient flows to the weights


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """(N, E) bool mask of the ``k`` highest scores per token."""
    idx = top_k_slots(scores, k)
    return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter_(-1, idx, True)


def dynamic_mask(probs: Tensor, threshold: float, min_k: int = 1) -> Tensor:
    """(N, E) bool mask of :func:`share_slots`: the fewest experts reaching ``threshold`` of the mass."""
    idx, keep = share_slots(probs, threshold, min_k)
    return torch.zeros(probs.shape, dtype=torch.bool, device=probs.device).scatter_(-1, idx, keep)
