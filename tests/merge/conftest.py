"""Tiny model families for merge tests: a base and three fine-tunes (base + Gaussian noise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.testing import save_tiny_model, tiny_llama_config


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"base", "ft1", "ft2", "ft3"}`` -> fp32 tiny Llama directories (4 layers, so gradients matter)."""
    root = tmp_path_factory.mktemp("family")
    cfg = tiny_llama_config(num_hidden_layers=4)
    base = save_tiny_model(root / "base", cfg, seed=0)
    out = {"base": base}
    for i in (1, 2, 3):
        out[f"ft{i}"] = save_tiny_model(root / f"ft{i}", cfg, seed=i, perturb_from=base, noise=0.02)
    return out


@pytest.fixture(scope="session")
def family_bf16(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same family stored in bf16 (2 layers)."""
    root = tmp_path_factory.mktemp("family_bf16")
    cfg = tiny_llama_config()
    base = save_tiny_model(root / "base", cfg, seed=0, dtype=torch.bfloat16)
    out = {"base": base}
    for i in (1, 2):
        out[f"ft{i}"] = save_tiny_model(
            root / f"ft{i}", cfg, seed=i, dtype=torch.bfloat16, perturb_from=base, noise=0.02
        )
    return out
