"""Router training of an assembled MoE with ``lmbricks train`` (task lm, ``trainable: [routers]``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.grow import assemble
from lmbricks.nn import load_model
from lmbricks.train import parse_config, train


@pytest.fixture
def moe_dir(tiny_llama: Path, finetunes: list[Path], tmp_path: Path) -> Path:
    recipe = {
        "base_model": str(tiny_llama),
        "gate_mode": "random",
        "experts_per_token": 2,
        "experts": [{"source_model": str(f)} for f in finetunes],
    }
    return assemble(recipe, tmp_path / "moe")


def _config(init_from: Path, text: Path, trainable: list[str] | None, **over: object) -> dict:
    cfg = {
        "init_from": str(init_from),
        "data": {"text_files": [str(text)], "seq_len": 32},
        "steps": 4,
        "batch_size": 2,
        "optim": {"lr": 0.05, "weight_decay": 0.0},
        "schedule": {"kind": "constant"},
        "checkpoint_every": 4,
        "seed": 0,
    }
    if trainable is not None:
        cfg["trainable"] = trainable
    cfg.update(over)
    return cfg


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "train.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. def main(): return 1 + 2 * x\n" * 40)
    return path


@pytest.mark.parametrize(
    ("kinds", "changed"), [(["routers"], {"router"}), (["routers", "experts"], {"router", "expert"})]
)
def test_only_the_named_kinds_train(
    moe_dir: Path, text: Path, tmp_path: Path, kinds: list[str], changed: set[str]
) -> None:
    from lmbricks.sft.params import param_kind

    result = train(parse_config(_config(moe_dir, text, kinds)), tmp_path / "run", report=False)
    before, _ = load_model(moe_dir)
    after, _ = load_model(result.final_checkpoint)
    a, b = before.state_dict(), after.state_dict()
    moved = {param_kind(k) for k in a if not torch.equal(a[k], b[k])}
    assert moved == changed  # everything else is bit-for-bit the assembled model
    counts = json.loads((tmp_path / "run" / "trainable.json").read_text())
    routers = sum(v.numel() for k, v in a.items() if param_kind(k) == "router")
    assert counts["kinds"] == kinds and (counts["trainable"] == routers) == (kinds == ["routers"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "switch" in log[0]["aux"] and "z" in log[0]["aux"]  # the balancing losses of the MoE issue


def test_trainable_is_validated(moe_dir: Path, tiny_llama: Path, text: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trainable"):
        parse_config(_config(moe_dir, text, []))
    with pytest.raises(ConfigError, match="trainable"):
        parse_config(_config(moe_dir, text, ["attention"]))
    with pytest.raises(ConfigError, match="no such parameters"):
        train(parse_config(_config(tiny_llama, text, ["routers"])), tmp_path / "dense-run", report=False)
