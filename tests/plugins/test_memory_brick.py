"""``lmbricks plugins memory save``: an InfLLM configuration as a brick, refused on another base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmbricks.adapters.base import base_model
from lmbricks.cli.main import app
from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.plugins.memory.brick import load_memory_brick
from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.testing import save_tiny_model, tiny_llama_config

runner = CliRunner()


def test_save_then_load_gives_the_settings(tiny_llama: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["plugins", "memory", "save", str(tiny_llama), str(tmp_path / "m"), "--window", "64",
                              "--top-k", "3", "--chunk-size", "16"])  # fmt: skip
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "m" / "lmbricks.json").read_text())["bricks"]["memory"]
    assert record["kind"] == "memory" and record["base_identity"]
    cfg = load_memory_brick(tmp_path / "m", base_model(tiny_llama))
    assert cfg == InfLLMConfig(window=64, top_k=3, chunk_size=16)
    other = save_tiny_model(tmp_path / "other", tiny_llama_config(), seed=5)
    with pytest.raises(ConfigError):
        load_memory_brick(tmp_path / "m", base_model(other))
    with pytest.raises(CheckpointError, match="memory brick"):
        load_memory_brick(tmp_path, base_model(tiny_llama))


def test_a_window_past_the_base_is_refused_before_writing(tiny_llama: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["plugins", "memory", "save", str(tiny_llama), str(tmp_path / "m"),
                              "--window", "100000"])  # fmt: skip
    assert res.exit_code != 0 and "window" in res.output and not (tmp_path / "m").exists()
