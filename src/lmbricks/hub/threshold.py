"""A ReLU-fied checkpoint's FATReLU threshold, restored on a model that transformers loaded.

``lmbricks sparsify relufy`` writes ``hidden_act: relu`` (what transformers can compute) and keeps
FATReLU's threshold T in config.json's ``lmbricks`` section (``activation: fatrelu``,
``activation_threshold``). ``from_pretrained`` alone would compute plain ReLU, another model;
:func:`restore_threshold` gives each Llama-family MLP FATReLU with that T again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn


class FATReLU(nn.Module):
    """FATReLU (ProSparse, arXiv 2402.13516) as a Hugging Face MLP's ``act_fn``: ``g if g > T else 0``.

    The same formula as ``lmbricks.moe.activations.fatrelu`` (this room sits below ``moe``).
    """

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        """``g`` (any shape) with every value at or below the threshold set to zero."""
        return torch.where(g > self.threshold, g, torch.zeros((), dtype=g.dtype, device=g.device))


def activation_threshold(model_dir: str | Path) -> float:
    """FATReLU's T recorded in ``model_dir/config.json``'s ``lmbricks`` section (0.0 for any other model)."""
    path = Path(model_dir) / "config.json"
    hf = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    section = hf.get("lmbricks")
    cfg = section.get("config") if isinstance(section, dict) else None
    if not isinstance(cfg, dict):
        return 0.0
    return float(cfg.get("activation_threshold") or 0.0) if cfg.get("activation") == "fatrelu" else 0.0


def restore_threshold(model: Any, threshold: float) -> int:
    """Give every Llama-family MLP of ``model`` (``gate_proj`` + ``act_fn``) FATReLU with ``threshold``.

    Args:
        model: a transformers model.
        threshold: T; 0 (or less) changes nothing.

    Returns:
        The number of MLPs changed.
    """
    if threshold <= 0:
        return 0
    mlps = [m for m in model.modules() if hasattr(m, "gate_proj") and hasattr(m, "act_fn")]
    for mlp in mlps:
        mlp.act_fn = FATReLU(threshold)
    return len(mlps)
