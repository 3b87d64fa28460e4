"""Fixtures: random LoRA bricks on the tiny Llama (no training needed for identities)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lmbricks.adapters.base import base_model
from lmbricks.adapters.brick import LoraPair, brick_record, save_factors
from lmbricks.checkpoint import CheckpointReader, atomic_directory, write_provenance

#: The cache root before the tests isolate it (integration tests need the real default model).
REAL_HOME = os.environ.get("LMBRICKS_HOME", str(Path.home() / ".cache" / "lmbricks"))

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_factors(base: Path, rank: int, seed: int, scale: float = 2.0) -> dict[str, LoraPair]:
    gen = torch.Generator().manual_seed(seed)
    reader = CheckpointReader(base)
    pairs = {}
    for key in reader:
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module.rsplit(".", 1)[-1] in TARGETS:
            out_f, in_f = reader.info(key).shape
            pairs[module] = LoraPair(
                A=torch.randn(rank, in_f, generator=gen) * 0.3,
                B=torch.randn(out_f, rank, generator=gen) * 0.3,
                scale=scale,
            )
    return pairs


def make_brick(base: Path, out: Path, seed: int, rank: int = 4, domain: str | None = None) -> Path:
    """A brick with random (non-zero) factors, recorded as trained on ``base``."""
    b = base_model(base)
    pairs = random_factors(base, rank, seed)
    with atomic_directory(out) as tmp:
        save_factors(tmp, pairs, base_model=b.name)
        write_provenance(
            tmp,
            command="test",
            recipe=None,
            inputs={"base": base},
            bricks=brick_record(
                name=out.name,
                base_model=b.name,
                base_sha256=b.sha256,
                base_identity=b.identity,
                rank=rank,
                alpha=float(rank),
                targets=TARGETS,
                domain=domain,
            ),
        )
    return out


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalogue writes go to a temporary LMBRICKS_HOME; shipped bricks are hidden."""
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LMBRICKS_BRICKS", str(tmp_path / "no-shipped-bricks"))


@pytest.fixture(scope="session")
def tiny_bricks(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bricks")
    return [make_brick(tiny_llama, root / f"b{i}", seed=10 + i, domain=f"d{i}") for i in range(3)]
