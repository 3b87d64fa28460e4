"""Fixtures of the alignment tests: tiny reward-model directories on the tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.nn.load import load_model
from lmbricks.reward import RewardModel, save_reward_model


def make_reward_dir(base: Path, dest: Path, seed: int) -> Path:
    """A reward model on the ``base`` backbone with a random head (seed ``seed``), saved to ``dest``."""
    lm, tok = load_model(base, hf_fallback=False)
    rm = RewardModel(lm)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rm.head.weight.copy_(torch.randn(rm.head.weight.shape, generator=gen))
    return save_reward_model(rm, dest, tok)


@pytest.fixture(scope="session")
def tiny_rms(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two reward models on the tiny Llama with different heads."""
    root = tmp_path_factory.mktemp("tiny_rms")
    return [make_reward_dir(tiny_llama, root / f"rm{i}", seed=i) for i in range(2)]
