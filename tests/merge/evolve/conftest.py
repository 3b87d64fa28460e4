"""Fixtures for ``merge evolve``: a private LMBRICKS_HOME with one small text domain."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from evolve_configs import DOMAIN

_WORDS = "the quick brown fox jumps over a lazy dog while emma reads and def main return x".split()  # noqa: SIM905


@pytest.fixture(scope="session")
def _evolve_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home holding the domain ``evo_text`` (validation and test splits of a few KB each)."""
    from lmbricks.data import add_domain

    root = tmp_path_factory.mktemp("evolve-home")
    home, texts = root / "home", root / "texts"
    texts.mkdir()
    rng = random.Random(0)
    mp = pytest.MonkeyPatch()
    mp.setenv("LMBRICKS_HOME", str(home))
    try:
        files = []
        for i in range(60):
            f = texts / f"doc-{i}.txt"
            f.write_text(" ".join(rng.choice(_WORDS) for _ in range(60)) + "\n")
            files.append(f)
        add_domain(DOMAIN, files, tokenizer=None)
    finally:
        mp.undo()
    return home


@pytest.fixture
def home(_evolve_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The home with ``evo_text``, exported as LMBRICKS_HOME for this test."""
    monkeypatch.setenv("LMBRICKS_HOME", str(_evolve_home))
    return _evolve_home
