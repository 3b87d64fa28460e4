"""Consecutive-token routing: does token t+1 go where token t went? (Mixtral paper, arXiv 2401.04088 s5).

For every pair of adjacent tokens in the same document and every layer, two rates:
- ``same_top1``: both tokens' first-choice experts are equal; random baseline 1/E.
- ``topk_overlap``: their top-k sets share at least one expert; random baseline
  1 - C(E-k, k) / C(E, k) (k distinct experts drawn uniformly for each token).
Each rate comes with its binomial standard error so it can be compared with the baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lmbricks.trace.types import RoutingTrace


def random_baselines(num_experts: int, top_k: int) -> tuple[float, float]:
    """(same top-1, top-k overlap) rates of a router that picks k distinct experts uniformly at random."""
    e, k = num_experts, top_k
    return 1.0 / e, 1.0 - math.comb(e - k, k) / math.comb(e, k)


def adjacent_pairs(doc_ids: Tensor) -> Tensor:
    """(P,) long positions t such that tokens t and t+1 belong to the same document."""
    return torch.nonzero(doc_ids[1:] == doc_ids[:-1]).flatten()


def consecutive_rates(indices: Tensor, top1: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Same-top-1 and top-k-overlap rates of adjacent pairs, per layer.

    Args:
        indices: (L, N, k) long experts, -1 where not routed.
        top1: (L, N) long first choice, -1 where none.
        pairs: (P,) positions t of the pairs (t, t+1).

    Returns:
        ``(same_top1, overlap, n_top1, n_overlap)``: (L,) fp64 rates and (L,) long pair counts (pairs
        where both tokens have a first choice, resp. at least one routed slot).
    """
    a, b = top1[:, pairs], top1[:, pairs + 1]  # (L, P)
    ok1 = (a >= 0) & (b >= 0)
    same = ((a == b) & ok1).sum(-1)
    ia, ib = indices[:, pairs], indices[:, pairs + 1]  # (L, P, k)
    shared = ((ia[..., :, None] == ib[..., None, :]) & (ia[..., :, None] >= 0)).any(-1).any(-1)  # (L, P)
    okk = (ia >= 0).any(-1) & (ib >= 0).any(-1)
    overlap = (shared & okk).sum(-1)
    n1, nk = ok1.sum(-1), okk.sum(-1)
    return same.double() / n1.clamp(min=1), overlap.double() / nk.clamp(min=1), n1, nk


@dataclass
class ConsecutiveStats:
    """One layer's consecutive-token routing against the random baselines."""

    layer: int
    same_top1: float
    same_top1_stderr: float
    topk_overlap: float
    topk_overlap_stderr: float
    random_top1: float
    random_overlap: float
    pairs: int


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def consecutive_stats(trace: RoutingTrace, token_mask: Tensor | None = None) -> list[ConsecutiveStats]:
    """Consecutive-token routing per traced layer (only pairs with both tokens in ``token_mask`` if given)."""
    pairs = adjacent_pairs(trace.doc_ids)
    if token_mask is not None:
        pairs = pairs[token_mask[pairs] & token_mask[pairs + 1]]
    same, overlap, n1, nk = consecutive_rates(trace.indices, trace.top1(), pairs)
    r1, rk = random_baselines(trace.num_experts, trace.top_k)
    return [
        ConsecutiveStats(
            layer=layer,
            same_top1=float(same[i]),
            same_top1_stderr=_stderr(float(same[i]), int(n1[i])),
            topk_overlap=float(overlap[i]),
            topk_overlap_stderr=_stderr(float(overlap[i]), int(nk[i])),
            random_top1=r1,
            random_overlap=rk,
            pairs=int(n1[i]),
        )
        for i, layer in enumerate(trace.layers)
    ]
