"""Where lmbricks keeps its cache (models, corpora, downloads)."""

from __future__ import annotations

import os
from pathlib import Path


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def home() -> Path:
    """The cache root: ``$LMBRICKS_HOME`` or ``~/.cache/lmbricks``; created on first use."""
    return _made(Path(os.environ.get("LMBRICKS_HOME", Path.home() / ".cache" / "lmbricks")).expanduser())


def models_dir() -> Path:
    """Converted models, one Hugging Face directory per registry name."""
    return _made(home() / "models")


def data_dir() -> Path:
    """Corpora, one directory per domain with its splits and manifest."""
    return _made(home() / "data")


def downloads_dir() -> Path:
    """Raw registry downloads (wheels, Debian packages), kept so re-fetching is free."""
    return _made(home() / "downloads")
