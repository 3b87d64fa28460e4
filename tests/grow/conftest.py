"""Fixtures: fine-tunes, bricks and small text domains around the tiny Llama (no network)."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from lmbricks.adapters.base import base_model
from lmbricks.adapters.brick import LoraPair, brick_record, save_factors
from lmbricks.checkpoint import CheckpointReader, atomic_directory, write_provenance
from lmbricks.testing import _TINY_TRUNK, save_tiny_model, tiny_llama_config

#: The cache root before a test isolates it (integration tests need the real default model and data).
REAL_HOME = os.environ.get("LMBRICKS_HOME", str(Path.home() / ".cache" / "lmbricks"))
FFN_AND_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_WORDS = {
    "prose": ["the", "a", "lady", "house", "garden", "letter", "morning", "evening", "walk", "friend", "said"],
    "code": ["def", "return", "import", "class", "self", "if", "else", "for", "in", "range", "len", "print"],
    "numbers": ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "+", "-", "*", "/", "=", "(", ")", "12", "345"],
}


def make_brick(base: Path, out: Path, seed: int, rank: int = 4, domain: str | None = None, scale: float = 2.0) -> Path:
    """A PEFT LoRA brick with random non-zero factors on q/k/v/o and the FFN, recorded as trained on ``base``."""
    gen = torch.Generator().manual_seed(seed)
    reader = CheckpointReader(base)
    pairs = {}
    for key in reader:
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module.rsplit(".", 1)[-1] in FFN_AND_ATTN:
            out_f, in_f = reader.info(key).shape
            pairs[module] = LoraPair(
                A=torch.randn(rank, in_f, generator=gen) * 0.3,
                B=torch.randn(out_f, rank, generator=gen) * 0.3,
                scale=scale,
            )
    b = base_model(base)
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
                targets=FFN_AND_ATTN,
                domain=domain,
            ),
        )
    return out


def domain_file(path: Path, kind: str, paragraphs: int = 160, seed: int = 0) -> Path:
    """A text file of ``paragraphs`` blank-line-separated paragraphs drawn from one word list."""
    rng = random.Random(seed)
    words = _WORDS[kind]
    paras = [" ".join(rng.choice(words) for _ in range(60)) for _ in range(paragraphs)]
    path.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Unit tests write the cache (hashes, user domains) into a temporary LMBRICKS_HOME."""
    if request.node.get_closest_marker("integration") is not None:
        monkeypatch.setenv("LMBRICKS_HOME", REAL_HOME)
        return
    monkeypatch.setenv("LMBRICKS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LMBRICKS_BRICKS", str(tmp_path / "no-shipped-bricks"))


@pytest.fixture
def domains(tmp_path: Path) -> list[str]:
    """Three user domains (prose, code, numbers) added to the isolated cache."""
    from lmbricks.data import add_domain

    names = []
    for i, kind in enumerate(("prose", "code", "numbers")):
        add_domain(f"t_{kind}", [domain_file(tmp_path / f"{kind}.txt", kind, seed=i)], tokenizer=None)
        names.append(f"t_{kind}")
    return names


@pytest.fixture(scope="session")
def finetunes(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three fine-tunes of the tiny Llama (its weights plus small noise)."""
    root = tmp_path_factory.mktemp("finetunes")
    return [
        save_tiny_model(root / f"ft{i}", tiny_llama_config(), seed=20 + i, perturb_from=tiny_llama, noise=0.02)
        for i in range(3)
    ]


@pytest.fixture(scope="session")
def base_copies(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two byte-identical copies of the tiny Llama in separate directories ("fine-tunes" with no change)."""
    root = tmp_path_factory.mktemp("copies")
    out = []
    for i in range(2):
        dst = root / f"copy{i}"
        shutil.copytree(tiny_llama, dst)
        out.append(dst)
    return out


@pytest.fixture(scope="session")
def other_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama of another width (hidden 48): not a fine-tune of the tiny base."""
    return save_tiny_model(tmp_path_factory.mktemp("other"), tiny_llama_config(hidden_size=48), seed=5)


@pytest.fixture
def bricks(tiny_llama: Path, tmp_path: Path, domains: list[str]) -> list[Path]:
    """Three random bricks of the tiny Llama, one per test domain (recorded in their lmbricks.json)."""
    return [make_brick(tiny_llama, tmp_path / "bricks" / f"b{i}", seed=30 + i, domain=d) for i, d in enumerate(domains)]


@pytest.fixture
def foreign_brick(finetunes: list[Path], tmp_path: Path) -> Path:
    """A brick recorded as trained on a fine-tune, not on the tiny base (same shapes, other hash)."""
    return make_brick(finetunes[0], tmp_path / "foreign", seed=3)


@pytest.fixture(scope="session")
def qwen3_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A tiny dense Qwen3 (q/k norms, head_dim 16 != hidden / heads) and three fine-tunes of it."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    root = tmp_path_factory.mktemp("qwen3")
    config = Qwen3Config(**{**_TINY_TRUNK, "head_dim": 16})
    base = save_tiny_model(root / "base", config, seed=3)
    with torch.no_grad():  # random init leaves the q/k norms at one: make them matter
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        for name, p in model.named_parameters():
            if "_norm" in name:
                p.add_(torch.randn(p.shape) * 0.3)
        model.save_pretrained(base)
    tunes = [save_tiny_model(root / f"ft{i}", config, seed=40 + i, perturb_from=base, noise=0.02) for i in range(3)]
    return base, tunes
