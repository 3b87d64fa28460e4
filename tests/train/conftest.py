"""Fixtures for training tests: a small corpus built here (no download)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from train_helpers import WORDS


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text file of 400 random 20-word lines (built here, no download)."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(400)))
    return path
