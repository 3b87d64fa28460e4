"""Expert-selection histograms and load statistics: pure functions of routing tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lmbricks.trace.types import RoutingTrace


def selection_counts(indices: Tensor, num_experts: int, token_mask: Tensor | None = None) -> Tensor:
    """How many (token, slot) pairs chose each expert, per layer.

    Args:
        indices: (L, N, k) long experts, -1 where not routed.
        num_experts: E.
        token_mask: (N,) bool tokens to count (default all).

    Returns:
        (L, E) long counts; row sums are k x tokens when every slot is routed.
    """
    idx = indices if token_mask is None else indices[:, token_mask]  # (L, N', k)
    L = idx.shape[0]
    flat = idx.reshape(L, -1)  # (L, N' k)
    valid = flat >= 0
    # offset each layer's experts so one bincount does all layers
    keyed = (flat.clamp(min=0) + torch.arange(L)[:, None] * num_experts)[valid]
    return torch.bincount(keyed, minlength=L * num_experts).reshape(L, num_experts)


def domain_histograms(trace: RoutingTrace) -> dict[str, Tensor]:
    """``{domain: (L, E) long counts}`` for every domain of the trace, plus ``"all"``."""
    token_domain = trace.token_domains()
    out = {
        d: selection_counts(trace.indices, trace.num_experts, token_domain == i) for i, d in enumerate(trace.domains)
    }
    out["all"] = selection_counts(trace.indices, trace.num_experts)
    return out


def doc_histograms(trace: RoutingTrace) -> Tensor:
    """(D, L, E) fp32 per-document selection shares: counts over the document's routed pairs per layer."""
    L, E, D = trace.num_layers, trace.num_experts, trace.num_docs
    flat = trace.indices.permute(1, 0, 2)  # (N, L, k)
    valid = flat >= 0
    key = trace.doc_ids[:, None, None] * (L * E) + torch.arange(L)[None, :, None] * E + flat.clamp(min=0)
    counts = torch.bincount(key[valid], minlength=D * L * E).reshape(D, L, E).float()
    return counts / counts.sum(-1, keepdim=True).clamp(min=1)


@dataclass
class LoadStats:
    """Load balance of one layer's expert counts.

    Attributes:
        entropy: Shannon entropy (nats) of the load distribution p_e = count_e / sum.
        normalised_entropy: entropy / log E (1 = perfectly balanced, 0 = one expert takes all).
        max_over_mean: max_e count_e / mean_e count_e (1 = balanced, E = collapse).
    """

    entropy: float
    normalised_entropy: float
    max_over_mean: float


def load_stats(counts: Tensor) -> list[LoadStats]:
    """Load entropy and max/mean load of each row of ``counts`` (L, E)."""
    out = []
    for row in counts.double():
        total = float(row.sum())
        e = row.numel()
        if total == 0:
            out.append(LoadStats(float("nan"), float("nan"), float("nan")))
            continue
        p = row / total
        h = float(-(p[p > 0] * p[p > 0].log()).sum())
        out.append(LoadStats(h, h / math.log(e) if e > 1 else 1.0, float(row.max() / row.mean())))
    return out
