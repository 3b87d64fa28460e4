"""``fitness.documents``: the fitness text as equal shares of the split's first documents."""

from __future__ import annotations

import pytest

from lmbricks.errors import ConfigError
from lmbricks.merge.evolve.config import FitnessConfig
from lmbricks.merge.evolve.fitness import document_shares


def test_each_document_gives_an_equal_prefix() -> None:
    docs = ["abcdefghij", "klmnopqrst", "uvwxyz0123", "never read"]
    assert document_shares(docs, 12, 3) == "abcd\n\nklmn\n\nuvwx"
    assert document_shares(docs[:1], 12, 3) == "abcd"  # fewer documents than asked: what there is
    assert document_shares(["ab", "cdefgh"], 8, 2) == "ab\n\ncdef"  # a short document gives what it has


def test_a_share_is_cut_at_a_character_boundary() -> None:
    text = document_shares(["ééé", "xyz"], 6, 2)  # 3 bytes per share: one 2-byte character, not a half one
    assert text == "é\n\nxyz" and text.encode("utf-8").decode("utf-8") == text


def test_documents_must_be_positive() -> None:
    from lmbricks.config import validate

    with pytest.raises(ConfigError, match="documents"):
        validate(FitnessConfig, {"bpb": {"code": 1.0}, "documents": 0}, "fitness")
    assert validate(FitnessConfig, {"bpb": {"code": 1.0}}, "fitness").documents is None  # the old prefix
