"""Activation sparsity by training: ReLU-fication of a dense SwiGLU model (ProSparse, arXiv 2402.13516)."""

from __future__ import annotations

from lmbricks.sparsify.config import RelufyConfig
from lmbricks.sparsify.pipeline import RelufyResult, relufy

__all__ = ["RelufyConfig", "RelufyResult", "relufy"]
