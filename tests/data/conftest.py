"""Unit tests of lmbricks.data run against a temporary cache, never the real one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``LMBRICKS_HOME`` at a fresh temporary folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("LMBRICKS_HOME", str(home))
    return home
