"""Fixtures: a private LMBRICKS_HOME with small user domains, and fresh copies of tiny models per test.

Every test works on copies, so a guard that failed would destroy only its own files, never the
session's fixtures.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from reliability_helpers import write_yaml

from lmbricks.testing import save_tiny_model, tiny_llama_config, tiny_mixtral_config

#: Domains the commands under test read: moefy's calibration set, and ``d`` for the rest.
DOMAINS = ("en_prose", "code", "math", "zh", "dialogue", "d")

_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "def", "main", "return", "x"]


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability-templates")
    models = {
        "a": save_tiny_model(root / "a", tiny_llama_config(), seed=0),
        "b": save_tiny_model(root / "b", tiny_llama_config(), seed=1),
        "mix": save_tiny_model(root / "mix", tiny_mixtral_config(), seed=0),
    }
    home = root / "home"
    texts = root / "texts"
    texts.mkdir()
    rng = random.Random(0)
    mp = pytest.MonkeyPatch()
    mp.setenv("LMBRICKS_HOME", str(home))
    try:
        from lmbricks.data import add_domain

        for name in DOMAINS:
            files = []
            for i in range(40):
                f = texts / f"{name}-{i}.txt"
                f.write_text(" ".join(rng.choice(_WORDS) for _ in range(60)) + "\n")
                files.append(f)
            add_domain(name, files, tokenizer=None)
    finally:
        mp.undo()
    return {**models, "home": home}


@pytest.fixture
def home(_templates: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own LMBRICKS_HOME (a copy holding the domains), exported to the environment."""
    path = shutil.copytree(_templates["home"], tmp_path / "home")
    monkeypatch.setenv("LMBRICKS_HOME", str(path))
    monkeypatch.setenv("LMBRICKS_BRICKS", str(tmp_path / "no-shipped-bricks"))
    return Path(path)


@pytest.fixture
def models(_templates: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Fresh copies of two tiny Llamas (``a``, ``b``) and a tiny Mixtral (``mix``) in ``tmp_path/models``."""
    root = tmp_path / "models"
    return {k: Path(shutil.copytree(_templates[k], root / k)) for k in ("a", "b", "mix")}


@pytest.fixture
def recipe(models: dict[str, Path], tmp_path: Path) -> Path:
    """A linear merge of ``a`` and ``b`` (absolute paths), in ``tmp_path/recipe.yaml``."""
    return write_yaml(
        tmp_path / "recipe.yaml",
        {
            "merge_method": "linear",
            "models": [
                {"model": str(models["a"]), "parameters": {"weight": 0.5}},
                {"model": str(models["b"]), "parameters": {"weight": 0.5}},
            ],
            "dtype": "float32",
        },
    )
