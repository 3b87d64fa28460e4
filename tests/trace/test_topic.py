"""Topic classification: separable features are learnt, random features stay at chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.trace import RoutingTrace, bag_of_words, cross_validate, topic_scores
from lmbricks.trace.topic import _svm


def _trace(indices: torch.Tensor, domains: list[str], length: int, token_ids: torch.Tensor) -> RoutingTrace:
    docs = len(domains)
    return RoutingTrace(
        indices=indices,
        weights=(indices >= 0).float(),
        token_ids=token_ids,
        doc_ids=torch.arange(docs).repeat_interleave(length),
        doc_domains=domains,
        layers=list(range(indices.shape[0])),
        num_experts=4,
    )


def test_cross_validate_separable_and_random() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x_sep = rng.normal(size=(60, 5)) + 6 * np.eye(5)[y]  # class means 6 sd apart
    assert cross_validate(x_sep, y, _svm(0), folds=5)[0] == 1.0
    acc, se = cross_validate(rng.normal(size=(60, 5)), y, _svm(0), folds=5)
    assert acc < 0.6 and se >= 0


def test_random_routing_is_at_chance_and_bag_of_words_sees_the_vocabulary() -> None:
    gen = torch.Generator().manual_seed(1)
    domains = [d for d in ("a", "b", "c", "d") for _ in range(15)]
    length = 50
    n = len(domains) * length
    idx = torch.rand(2, n, 4, generator=gen).topk(2, dim=-1).indices
    # domain-specific vocabularies: bag of words must separate them, routing (random) must not
    vocab = torch.tensor([ord(d[0]) for d in domains]).repeat_interleave(length) * 10
    tokens = vocab + torch.randint(0, 5, (n,), generator=gen)
    rows = {r.features: r for r in topic_scores(_trace(idx, domains, length, tokens), folds=5)}
    assert rows["majority class"].accuracy == pytest.approx(0.25)
    assert rows["bag of words"].accuracy == 1.0
    assert rows["all layers"].accuracy < 0.5
    assert set(rows) == {"majority class", "bag of words", "all layers", "layer 0", "layer 1"}


def test_bag_of_words_counts_tokens_per_document() -> None:
    idx = torch.zeros(1, 5, 1, dtype=torch.long)
    t = RoutingTrace(idx, idx.float(), torch.tensor([7, 7, 9, 9, 9]), torch.tensor([0, 0, 0, 1, 1]), ["a", "b"], [0], 4)
    assert bag_of_words(t).tolist() == [[2.0, 1.0], [0.0, 2.0]]


def test_too_few_documents_is_refused() -> None:
    idx = torch.zeros(1, 6, 1, dtype=torch.long)
    t = _trace(idx, ["a", "a", "b"], 2, torch.arange(6))
    with pytest.raises(ConfigError, match="'b' has 1 document"):
        topic_scores(t)
