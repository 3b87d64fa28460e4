"""Expert capacity: how many (token, slot) pairs an expert may take, and which overflow.

Dropless (capacity_factor None) is the default. With a factor, capacity = ceil(T*k/E * cf) and
the pairs over capacity are dropped: they contribute zero, so the token passes through the
block's residual connection unchanged (Switch Transformer).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor


def expert_capacity(num_tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """ceil(T * k / E * cf): the pairs one expert may process.

    Args:
        num_tokens: T, the real (non-padding) tokens of the call.
        top_k: k slots per token.
        num_experts: E.
        capacity_factor: cf > 0 (1.0 = exactly the balanced share).

    Returns:
        The capacity, an int >= 0.
    """
    return math.ceil(num_tokens * top_k / num_experts * capacity_factor)


def apply_capacity(
    indices: Tensor,
    weights: Tensor,
    keep: Tensor,
    num_experts: int,
    capacity: int,
    policy: Literal["position", "probability"] = "probability",
) -> Tensor:
    """Keep at most ``capacity`` pairs per expert; the others are dropped.

    Priority among the pairs of one expert:
      - "position": first choices of all tokens before second choices, then earlier tokens first
        (GShard / Switch);
      - "probability": higher router weight first, ties by position (batch-prioritised routing,
        Riquelme et al. 2021).

    Args:
        indices: (T, k) expert of each pair.
        weights: (T, k) gate of each pair.
        keep: (T, k) bool pairs that compete (False for padding).
        num_experts: E.
        capacity: pairs per expert.
        policy: "position" or "probability".

    Returns:
        (T, k) bool: pairs that are kept.
    """
    t, k = indices.shape
    # slot-major flat order: pair (t, j) -> j * T + t, so first choices come first
    experts = torch.where(keep, indices, num_experts).t().reshape(-1)  # (P,), E = not competing
    if policy == "probability":
        w = weights.detach().float().t().reshape(-1)
        prio = torch.argsort(-w, stable=True)  # (P,) stable: ties keep position order
    elif policy == "position":
        prio = torch.arange(t * k, device=indices.device)
    else:
        raise ValueError(f"unknown drop policy {policy!r}")
    e_prio = experts[prio]
    by_expert = torch.argsort(e_prio, stable=True)  # sorted by expert, then priority
    e_sorted = e_prio[by_expert]
    counts = torch.bincount(e_sorted, minlength=num_experts + 1)
    starts = torch.cumsum(counts, 0) - counts  # (E+1,)
    rank = torch.arange(t * k, device=indices.device) - starts[e_sorted]  # place within its expert
    kept_sorted = (rank < capacity) & (e_sorted < num_experts)
    kept_flat = torch.empty_like(kept_sorted)
    kept_flat[prio[by_expert]] = kept_sorted
    return kept_flat.view(k, t).t()  # (T, k)
