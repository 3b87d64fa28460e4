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
    rng = random.Random(0)
    # one file of 60 paragraphs: add_domain cuts a single file at blank lines into documents
    paragraphs = [" ".join(rng.choice(_WORDS) for _ in range(60)) for _ in range(60)]
    (root / "text.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMBRICKS_HOME", str(root / "home"))
        add_domain(DOMAIN, [root / "text.txt"], tokenizer=None)
    return root / "home"


@pytest.fixture
def home(_evolve_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The home with ``evo_text``, exported as LMBRICKS_HOME for this test."""
    monkeypatch.setenv("LMBRICKS_HOME", str(_evolve_home))
    return _evolve_home
