"""RoutingTrace: validation, first choice, document offsets, save/load and concatenation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.trace import RoutingTrace, concat_traces


def _trace() -> RoutingTrace:
    # 2 layers, 5 tokens (doc 0: 3 tokens, doc 1: 2 tokens), top-2 of 4 experts
    indices = torch.tensor(
        [
            [[0, 1], [2, 3], [1, -1], [3, 0], [-1, -1]],
            [[1, 0], [0, 2], [3, 2], [2, 1], [0, 3]],
        ]
    )
    weights = torch.tensor(
        [
            [[0.7, 0.3], [0.4, 0.6], [1.0, 0.0], [0.5, 0.5], [0.0, 0.0]],
            [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]],
        ]
    )
    return RoutingTrace(
        indices=indices,
        weights=weights,
        token_ids=torch.tensor([5, 6, 7, 8, 9]),
        doc_ids=torch.tensor([0, 0, 0, 1, 1]),
        doc_domains=["code", "prose"],
        layers=[3, 7],
        num_experts=4,
        source="test",
    )


def test_top1_is_the_routed_slot_of_largest_weight() -> None:
    t = _trace()
    assert t.top1().tolist() == [[0, 3, 1, 3, -1], [1, 2, 3, 1, 0]]


def test_offsets_domains_and_layer_position() -> None:
    t = _trace()
    assert t.doc_offsets().tolist() == [0, 3, 5]
    assert t.token_domains().tolist() == [0, 0, 0, 1, 1]
    assert t.domains == ["code", "prose"]
    assert t.layer_position(7) == 1
    with pytest.raises(ConfigError, match="layer 5"):
        t.layer_position(5)


def test_validation_names_the_field() -> None:
    t = _trace()
    with pytest.raises(ConfigError, match="num_experts"):
        RoutingTrace(t.indices, t.weights, t.token_ids, t.doc_ids, t.doc_domains, t.layers, num_experts=3)
    with pytest.raises(ConfigError, match="doc_ids"):
        RoutingTrace(t.indices, t.weights, t.token_ids, t.doc_ids.flip(0), t.doc_domains, t.layers, 4)
    with pytest.raises(ConfigError, match="layers"):
        RoutingTrace(t.indices, t.weights, t.token_ids, t.doc_ids, t.doc_domains, [3], 4)


def test_save_load_round_trip(tmp_path: Path) -> None:
    t = _trace()
    back = RoutingTrace.load(t.save(tmp_path / "t.pt"))
    assert torch.equal(back.indices, t.indices) and torch.equal(back.weights, t.weights)
    assert back.doc_domains == t.doc_domains and back.layers == t.layers and back.source == "test"


def test_concat_renumbers_documents() -> None:
    t = _trace()
    both = concat_traces([t, t])
    assert both.num_docs == 4 and both.num_tokens == 10
    assert both.doc_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert both.doc_domains == ["code", "prose", "code", "prose"]
