"""Fixtures: domain texts and a tiny Mixtral whose router is biased per domain (see planted_routing.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from planted_routing import make_texts, save_biased_mixtral


@pytest.fixture(scope="session")
def domain_texts() -> dict[str, list[str]]:
    return make_texts()


@pytest.fixture(scope="session")
def biased_mixtral(tmp_path_factory: pytest.TempPathFactory, domain_texts: dict[str, list[str]]) -> Path:
    return save_biased_mixtral(tmp_path_factory.mktemp("biased_mixtral"), domain_texts)
