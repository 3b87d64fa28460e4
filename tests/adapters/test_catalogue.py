"""Catalogue: plug / list / unplug, and refusing a brick made for another base model."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbricks.adapters.catalogue import find_brick, list_bricks, plug, unplug
from lmbricks.errors import ConfigError, UnknownNameError
from lmbricks.testing import save_tiny_model, tiny_llama_config


def test_plug_list_unplug(tiny_llama: Path, tiny_bricks: list[Path]) -> None:
    entry = plug(tiny_bricks[0], tiny_llama, name="first")
    assert entry.brick.path.name == "first" and entry.source == "plugged"
    rows = [e.row() for e in list_bricks(tiny_llama)]
    assert [r["name"] for r in rows] == ["b0"] and rows[0]["domain"] == "d0" and rows[0]["rank"] == 4
    assert rows[0]["base_sha256"] and len(rows[0]["targets"]) == 7
    assert find_brick("first", tiny_llama) == entry.brick.path
    with pytest.raises(ConfigError, match="already exists"):
        plug(tiny_bricks[0], tiny_llama, name="first")
    unplug("first", tiny_llama)
    assert list_bricks(tiny_llama) == []
    with pytest.raises(UnknownNameError, match="no plugged brick"):
        unplug("first", tiny_llama)


def test_brick_for_another_base_is_refused(tiny_bricks: list[Path], tmp_path: Path) -> None:
    other = save_tiny_model(tmp_path / "other", tiny_llama_config(), seed=1)
    with pytest.raises(ConfigError, match="was trained on .* not on other"):
        plug(tiny_bricks[0], other)


def test_unknown_brick_name(tiny_llama: Path) -> None:
    with pytest.raises(UnknownNameError, match="no brick 'nope'"):
        find_brick("nope", tiny_llama)
