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


def test_generate_reads_a_memory_brick_and_refuses_it_on_another_base(tiny_llama: Path, tmp_path: Path) -> None:
    prompt = tmp_path / "long.txt"
    prompt.write_text("the quick brown fox jumps over the lazy dog. " * 30)
    saved = runner.invoke(app, ["plugins", "memory", "save", str(tiny_llama), str(tmp_path / "m"), "--window", "64",
                                "--top-k", "2", "--chunk-size", "16"])  # fmt: skip
    assert saved.exit_code == 0, saved.output
    common = ["generate", "--prompt-file", str(prompt), "--max-new-tokens", "5", "--precision", "fp32", "--json"]
    # the brick's settings win over the (default, too wide for this base) --window: flags give the same run
    by_brick = runner.invoke(app, [*common, str(tiny_llama), "--memory", str(tmp_path / "m")])
    by_flags = runner.invoke(app, [*common, str(tiny_llama), "--window", "64", "--top-k", "2", "--chunk-size", "16"])
    assert by_brick.exit_code == 0 and by_flags.exit_code == 0, by_brick.output + by_flags.output
    got, want = json.loads(by_brick.stdout), json.loads(by_flags.stdout)
    assert got["tokens"] == want["tokens"] and got["blocks"] == want["blocks"] > 0
    other = save_tiny_model(tmp_path / "other", tiny_llama_config(), seed=5)
    refused = runner.invoke(app, [*common, str(other), "--memory", str(tmp_path / "m")])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    not_a_brick = runner.invoke(app, [*common, str(tiny_llama), "--memory", str(tmp_path)])
    assert not_a_brick.exit_code == 2 and "memory brick" in not_a_brick.output
