"""lmbricks: build language models from bricks.

Merge, sparsify, route and compose ordinary Hugging Face checkpoints. The library API lives in the
sub-packages (``lmbricks.hub``, ``lmbricks.checkpoint``, ``lmbricks.data``, ``lmbricks.eval``,
``lmbricks.report``); the ``lmbricks`` console script is a thin layer over it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
