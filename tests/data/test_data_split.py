"""Splits: deterministic, disjoint, complete, with the floors and caps of the rule."""

from __future__ import annotations

import random

import pytest

from lmbricks.data.build import _split_docs
from lmbricks.data.document import Document
from lmbricks.data.split import SplitRule, assign_splits, unit_hash


def _sizes(n: int, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    return {f"pkg:file{i}.txt": rng.randint(100, 5000) for i in range(n)}


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    sizes = _sizes(500)
    items = list(sizes.items())
    random.Random(1).shuffle(items)
    assert assign_splits(sizes) == assign_splits(dict(items))


def test_split_is_a_partition_with_the_requested_shares() -> None:
    sizes = _sizes(2000)
    total = sum(sizes.values())
    rule = SplitRule(fraction=0.05, min_test_bytes=0, min_validation_bytes=0)
    where = assign_splits(sizes, rule)
    assert set(where) == set(sizes)
    got = {s: sum(sizes[k] for k, v in where.items() if v == s) for s in ("train", "validation", "test")}
    assert sum(got.values()) == total
    for split in ("validation", "test"):
        # each eval split overshoots its 5% target by less than one unit
        assert 0.05 * total <= got[split] < 0.05 * total + 5000
    # test takes the units first in hash order
    order = sorted(sizes, key=unit_hash)
    first = order[0]
    assert where[first] == "test"


def test_floors_raise_eval_splits_and_the_cap_bounds_them() -> None:
    sizes = _sizes(400)
    total = sum(sizes.values())
    rule = SplitRule(fraction=0.05, min_test_bytes=150_000, min_validation_bytes=100_000, max_share=0.25)
    where = assign_splits(sizes, rule)
    test = sum(sizes[k] for k, v in where.items() if v == "test")
    val = sum(sizes[k] for k, v in where.items() if v == "validation")
    assert test >= min(150_000, 0.25 * total) and val >= min(100_000, 0.25 * total)
    assert test < 0.25 * total + 5000 and val < 0.25 * total + 5000


@pytest.mark.parametrize(
    ("n", "expected"), [(1, {"train"}), (2, {"train", "test"}), (3, {"train", "validation", "test"})]
)
def test_tiny_corpora_keep_train_non_empty(n: int, expected: set[str]) -> None:
    where = assign_splits({f"d{i}": 10 for i in range(n)})
    assert set(where.values()) == expected


def test_documents_of_one_group_share_a_split() -> None:
    docs = [
        Document(id=f"page{p}/{lang}", text="x" * (50 + p), source="s", group=f"page{p}")
        for p in range(60)
        for lang in ("en", "de", "fr")
    ]
    splits = _split_docs(docs, SplitRule(fraction=0.1, min_test_bytes=0, min_validation_bytes=0))
    where = {d.id: s for s, ds in splits.items() for d in ds}
    for p in range(60):
        assert len({where[f"page{p}/{lang}"] for lang in ("en", "de", "fr")}) == 1
    assert all(splits[s] for s in splits)


def test_split_rule_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        SplitRule(fraction=0.7)
