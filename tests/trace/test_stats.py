"""Histograms and load statistics on hand-made and random routing."""

from __future__ import annotations

import math

import torch

from lmbricks.trace import RoutingTrace, doc_histograms, domain_histograms, load_stats, selection_counts


def test_counts_sum_to_k_times_tokens_and_skip_unrouted() -> None:
    gen = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(8, generator=gen)[:2] for _ in range(3 * 50)]).reshape(3, 50, 2)
    counts = selection_counts(idx, 8)
    assert counts.shape == (3, 8)
    assert counts.sum(-1).tolist() == [100, 100, 100]
    # a brute-force count agrees
    for layer in range(3):
        for e in range(8):
            assert int(counts[layer, e]) == int((idx[layer] == e).sum())
    idx[:, :10, 1] = -1
    assert selection_counts(idx, 8).sum(-1).tolist() == [90, 90, 90]
    mask = torch.zeros(50, dtype=torch.bool)
    mask[:5] = True
    assert selection_counts(idx, 8, mask).sum(-1).tolist() == [5, 5, 5]


def test_load_stats_balanced_and_collapsed() -> None:
    balanced, collapsed = load_stats(torch.tensor([[5, 5, 5, 5], [20, 0, 0, 0]]))
    assert math.isclose(balanced.normalised_entropy, 1.0) and math.isclose(balanced.max_over_mean, 1.0)
    assert math.isclose(balanced.entropy, math.log(4))
    assert collapsed.normalised_entropy == 0.0 and math.isclose(collapsed.max_over_mean, 4.0)


def test_domain_and_document_histograms() -> None:
    idx = torch.tensor([[[0, 1], [0, 2], [3, -1], [3, 1]]])  # (1 layer, 4 tokens, k=2)
    trace = RoutingTrace(
        indices=idx,
        weights=(idx >= 0).float(),
        token_ids=torch.arange(4),
        doc_ids=torch.tensor([0, 0, 1, 1]),
        doc_domains=["a", "b"],
        layers=[0],
        num_experts=4,
    )
    h = domain_histograms(trace)
    assert h["a"].tolist() == [[2, 1, 1, 0]] and h["b"].tolist() == [[0, 1, 0, 2]]
    assert torch.equal(h["all"], h["a"] + h["b"])
    docs = doc_histograms(trace)  # (2, 1, 4)
    assert torch.allclose(docs[0, 0], torch.tensor([0.5, 0.25, 0.25, 0.0]))
    assert torch.allclose(docs[1, 0], torch.tensor([0.0, 1 / 3, 0.0, 2 / 3]))
