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


def test_an_unset_documents_keeps_the_log_hash_of_older_configs() -> None:
    """A log written before ``documents`` existed still resumes: the field counts only when set."""
    from lmbricks.merge.evolve.config import EvolveConfig
    from lmbricks.merge.evolve.log import config_hash
    from lmbricks.merge.evolve.pipeline import _digest
    from lmbricks.merge.recipe import parse_recipe

    data = {"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 0.5}}]}
    recipe = parse_recipe(data)
    cfg = EvolveConfig.model_validate(
        {"recipe": data, "free": [{"parameter": "weight", "low": 0, "high": 1}], "fitness": {"bpb": {"code": 1.0}}}
    )
    old = {"recipe": recipe.to_dict(), "free": [f.model_dump() for f in cfg.free],
           "fitness": {k: v for k, v in cfg.fitness.model_dump().items() if k != "documents"},
           "optimizer": cfg.optimizer.model_dump()}  # fmt: skip
    assert _digest(cfg, recipe) == config_hash(old)
    spread = cfg.model_copy(update={"fitness": cfg.fitness.model_copy(update={"documents": 6})})
    assert _digest(spread, recipe) != config_hash(old)
