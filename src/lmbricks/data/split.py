"""Deterministic train/validation/test splits by document hash.

Each split unit (a document, or a group of documents that must stay together) is placed in an
order given by the SHA-1 of its key; test takes units from the start of that order until it holds
its share of the bytes, validation the next ones, train the rest. The same documents therefore give
the same split on every machine, and the three splits are disjoint by construction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitRule:
    """How much text validation and test receive.

    Attributes:
        fraction: share of all bytes for each of validation and test (0.05 gives 90/5/5).
        min_test_bytes: test gets at least this many bytes (so it holds enough tokens to measure).
        min_validation_bytes: the same floor for validation.
        max_share: neither may take more than this share of the bytes (small user corpora), except
            that each non-empty one gets at least one unit.
    """

    fraction: float = 0.05
    min_test_bytes: int = 12_000
    min_validation_bytes: int = 12_000
    max_share: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 0.5:
            raise ValueError(f"SplitRule.fraction must lie in [0, 0.5], got {self.fraction}")
        if not 0.0 < self.max_share <= 0.5:
            raise ValueError(f"SplitRule.max_share must lie in (0, 0.5], got {self.max_share}")


def unit_hash(key: str) -> str:
    """The SHA-1 hex digest of a split key: the unit's place in the split order."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def assign_splits(sizes: Mapping[str, int], rule: SplitRule | None = None) -> dict[str, str]:
    """Assign every unit to ``"train"``, ``"validation"`` or ``"test"``.

    Args:
        sizes: bytes of text per unit key.
        rule: the shares and floors (default :class:`SplitRule`).

    Returns:
        Unit key -> split name. With one unit it goes to train; with two, test and train; from three
        on, each split receives at least one.
    """
    rule = rule or SplitRule()
    order = sorted(sizes, key=lambda k: (unit_hash(k), k))
    total = sum(sizes.values())
    cap = rule.max_share * total
    targets = {
        "test": min(max(rule.fraction * total, rule.min_test_bytes), cap),
        "validation": min(max(rule.fraction * total, rule.min_validation_bytes), cap),
    }
    out: dict[str, str] = {}
    i = 0
    for split in ("test", "validation"):
        got = 0
        # Leave at least one unit for train; take at least one unit per split.
        while i < len(order) - 1 and (got == 0 or got < targets[split]):
            out[order[i]] = split
            got += sizes[order[i]]
            i += 1
    for key in order[i:]:
        out[key] = "train"
    return out
