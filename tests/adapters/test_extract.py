"""Extraction recovers a planted low-rank fine-tune exactly and reports the error of a truncated one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.adapters import load_factors
from lmbricks.adapters.extract import extract_brick
from lmbricks.checkpoint import CheckpointReader, save_state_dict
from lmbricks.errors import ConfigError


def _finetune(base: Path, out: Path, rank: int) -> dict[str, torch.Tensor]:
    reader = CheckpointReader(base)
    gen = torch.Generator().manual_seed(3)
    tensors, planted = {}, {}
    for key in reader:
        w = reader.get(key).float().clone()
        if key.endswith(("q_proj.weight", "down_proj.weight")):
            d = torch.randn(w.shape[0], rank, generator=gen) @ torch.randn(rank, w.shape[1], generator=gen) * 0.05
            w += d
            planted[key.removesuffix(".weight")] = d
        tensors[key] = w
    import json

    config = json.loads((base / "config.json").read_text())
    save_state_dict(out, tensors, config=config)
    return planted


def test_extract_recovers_planted_low_rank_delta(tiny_llama: Path, tmp_path: Path) -> None:
    planted = _finetune(tiny_llama, tmp_path / "ft", rank=2)
    info, ext = extract_brick(tmp_path / "ft", tiny_llama, 2, tmp_path / "brick")
    assert ext.rel_error < 1e-5
    pairs = load_factors(info.path)
    for module, d in planted.items():
        torch.testing.assert_close(pairs[module].delta(), d, rtol=1e-4, atol=1e-6)
    assert float(pairs["model.layers.0.self_attn.k_proj"].delta().abs().max()) == 0.0  # untouched module
    assert info.record["bricks"]["adapter"]["reconstruction"]["rel_error"] < 1e-5


def test_extract_reports_truncation_error(tiny_llama: Path, tmp_path: Path) -> None:
    _finetune(tiny_llama, tmp_path / "ft", rank=6)
    _, ext = extract_brick(tmp_path / "ft", tiny_llama, 2, tmp_path / "brick")
    assert 0.1 < ext.rel_error < 1.0
    with pytest.raises(ConfigError, match="rank must be"):
        extract_brick(tmp_path / "ft", tiny_llama, 0, tmp_path / "brick0")
