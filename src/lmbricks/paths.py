"""Where lmbricks keeps its cache (models, corpora, downloads)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root: ``$LMBRICKS_HOME`` or ``~/.cache/lmbricks``; created on first use."""
    root = Path(os.environ.get("LMBRICKS_HOME", Path.home() / ".cache" / "lmbricks")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Converted models, one Hugging Face directory per registry name."""
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Corpora, one directory per domain with its splits and manifest."""
    path = home() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloads_dir() -> Path:
    """Raw registry downloads (wheels, Debian packages), kept so re-fetching is free."""
    path = home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path
