"""lmbricks: build language models from bricks.

Merge, sparsify, route and compose ordinary Hugging Face checkpoints. The library API lives in the
sub-packages (``lmbricks.hub``, ``lmbricks.checkpoint``, ``lmbricks.data``, ``lmbricks.eval``,
``lmbricks.merge``, ``lmbricks.moe``, ``lmbricks.nn``, ...); the ``lmbricks`` console script is a
thin layer over it. ``lmbricks.load_model(ref)`` loads any supported model, including directories
that carry an ``lmbricks`` section in config.json. ``lmbricks.tune_process()``, called once at the start
of a process, keeps large tensor buffers in the heap (the ``lmbricks`` command does it for you; opt
out with ``LMBRICKS_TUNE_ALLOCATOR=0``; see docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from lmbricks.runtime.allocator import tune_process
from lmbricks.version import __version__

__all__ = ["__version__", "load_model", "tune_process"]


def load_model(ref: Any, **kwargs: Any) -> Any:
    """Load ``(model, tokenizer)`` from a registry name, model directory or GGUF file.

    See :func:`lmbricks.nn.load.load_model` for the options.
    """
    from lmbricks.nn.load import load_model as _load

    return _load(ref, **kwargs)
