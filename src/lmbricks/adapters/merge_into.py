"""Write a model with LoRA factors merged into its weights: ``W + scale * B A`` per adapted module."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lmbricks.adapters.brick import LoraPair
from lmbricks.checkpoint import (
    PROVENANCE_FILE,
    TOKENIZER_FILES,
    CheckpointReader,
    save_state_dict,
    write_provenance,
)
from lmbricks.errors import ConfigError


def merged_tensors(reader: CheckpointReader, pairs: Mapping[str, LoraPair]) -> dict[str, torch.Tensor]:
    """The base's tensors with each adapted weight replaced by ``W + delta`` (in the weight's dtype).

    Raises:
        ConfigError: a module of ``pairs`` has no weight in the base, or its shape differs.
    """
    out: dict[str, torch.Tensor] = {}
    for key in reader:
        out[key] = reader.get(key)
    for module, pair in pairs.items():
        key = f"{module}.weight"
        if key not in out:
            raise ConfigError(f"the adapter changes {module}, which the model does not have")
        w = out[key]
        delta = pair.delta()
        if tuple(delta.shape) != tuple(w.shape):
            raise ConfigError(f"{key}: adapter update {tuple(delta.shape)} does not fit {tuple(w.shape)}")
        out[key] = (w.float() + delta).to(w.dtype)
    return out


def save_merged(
    base_path: Path,
    pairs: Mapping[str, LoraPair],
    out: str | Path,
    *,
    command: str,
    recipe: dict[str, Any] | None,
    inputs: Mapping[str, Path],
    bricks: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Save ``base + adapter`` as a Hugging Face directory (config, weights, tokenizer, lmbricks.json)."""
    reader = CheckpointReader(base_path)
    tensors = merged_tensors(reader, pairs)
    with open(base_path / "config.json", encoding="utf-8") as fh:
        config = json.load(fh)
    with tempfile.TemporaryDirectory(prefix="lmbricks-merge-") as side:
        write_provenance(Path(side), command=command, recipe=recipe, inputs=inputs, bricks=bricks)
        extra = {name: base_path / name for name in TOKENIZER_FILES if (base_path / name).is_file()}
        extra[PROVENANCE_FILE] = Path(side) / PROVENANCE_FILE
        return save_state_dict(out, tensors, config=config, force=force, extra_files=extra, inputs=inputs)
