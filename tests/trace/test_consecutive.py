"""Consecutive-token routing: baselines, document boundaries, and Monte-Carlo agreement."""

from __future__ import annotations

import math

import pytest
import torch

from lmbricks.trace import RoutingTrace, consecutive_stats, random_baselines
from lmbricks.trace.consecutive import adjacent_pairs


def test_baselines_match_the_mixtral_paper() -> None:
    top1, overlap = random_baselines(8, 2)
    assert top1 == 0.125
    assert overlap == pytest.approx(0.464, abs=1e-3)  # 1 - C(6,2)/C(8,2) = 13/28
    assert random_baselines(4, 2) == (0.25, pytest.approx(1 - 1 / 6))
    assert random_baselines(4, 3)[1] == 1.0  # two 3-subsets of 4 always meet


def _random_trace(e: int, k: int, docs: int, length: int, seed: int) -> RoutingTrace:
    gen = torch.Generator().manual_seed(seed)
    n = docs * length
    keys = torch.rand(2, n, e, generator=gen)
    idx = keys.topk(k, dim=-1).indices  # k distinct uniform experts per token
    w = torch.softmax(torch.rand(2, n, k, generator=gen), -1)
    return RoutingTrace(
        indices=idx,
        weights=w,
        token_ids=torch.zeros(n, dtype=torch.long),
        doc_ids=torch.arange(docs).repeat_interleave(length),
        doc_domains=["d"] * docs,
        layers=[0, 1],
        num_experts=e,
    )


def test_pairs_stop_at_document_boundaries() -> None:
    pairs = adjacent_pairs(torch.tensor([0, 0, 0, 1, 1, 2]))
    assert pairs.tolist() == [0, 1, 3]


@pytest.mark.parametrize(("e", "k"), [(8, 2), (4, 2), (16, 4)])
def test_uniform_router_gives_the_random_baselines(e: int, k: int) -> None:
    trace = _random_trace(e, k, docs=40, length=100, seed=e + k)
    r1, rk = random_baselines(e, k)
    for s in consecutive_stats(trace):
        assert s.pairs == 40 * 99
        assert abs(s.same_top1 - r1) < 4 * math.sqrt(r1 * (1 - r1) / s.pairs)
        assert abs(s.topk_overlap - rk) < 4 * math.sqrt(max(rk * (1 - rk), 1e-4) / s.pairs)


def test_sticky_router_is_far_above_baseline() -> None:
    trace = _random_trace(8, 2, docs=10, length=50, seed=0)
    trace.indices[:] = trace.indices[:, :1]  # every token copies token 0's choices
    trace.weights[:] = trace.weights[:, :1]
    for s in consecutive_stats(trace):
        assert s.same_top1 == 1.0 and s.topk_overlap == 1.0
