"""The memory plug-in as a brick: an InfLLM configuration for one base model, in ``lmbricks.json``.

InfLLM is training-free, so the brick holds no weights: ``bricks.memory`` records ``kind: memory``,
the base's name, hash and identity, and the :class:`InfLLMConfig` fields. The settings are checked
against the base's trained window when saved; the brick is refused on another base when read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lmbricks.adapters.base import BaseModel, check_brick_base
from lmbricks.checkpoint import PROVENANCE_FILE
from lmbricks.errors import CheckpointError
from lmbricks.plugins.memory.config import InfLLMConfig

KIND = "memory"


def _trained_window(base: BaseModel) -> int | None:
    try:
        config = json.loads((base.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return int(value) if value is not None else None


def save_memory_brick(out: Path, cfg: InfLLMConfig, base: BaseModel, *, command: str, force: bool = False) -> None:
    """Write an InfLLM configuration for ``base`` as a brick directory (atomically, never over an input).

    Raises:
        ConfigError: the window does not fit the base's trained window, or ``out`` is an input.
    """
    from lmbricks.checkpoint import atomic_directory, write_provenance

    trained = _trained_window(base)
    if trained is not None and cfg.positions == "infllm":
        cfg.check_window(trained)
    record = {KIND: {"kind": KIND, "method": "infllm", "base_model": base.name, "base_sha256": base.sha256,
                     "base_identity": base.identity, "config": dataclasses.asdict(cfg)}}  # fmt: skip
    inputs = {"base": base.path}
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        write_provenance(tmp, command=command, recipe=dataclasses.asdict(cfg), inputs=inputs, bricks=record)


def load_memory_brick(path: str | Path, base: BaseModel) -> InfLLMConfig:
    """The InfLLM configuration of a memory brick, for ``base``.

    Raises:
        CheckpointError: not a memory brick (no or malformed ``lmbricks.json``, another kind).
        ConfigError: the brick was saved for another base (names what differs), or bad settings.
    """
    path = Path(path).expanduser()
    meta = path / PROVENANCE_FILE
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a memory brick (no {PROVENANCE_FILE})") from None
    except ValueError as exc:
        raise CheckpointError(f"{meta}: not valid JSON ({exc})") from None
    record: Any = (data.get("bricks") or {}).get(KIND) if isinstance(data, dict) else None
    if not isinstance(record, dict) or record.get("kind") != KIND or not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{meta}: not a memory brick (no bricks.{KIND} section)")
    check_brick_base(path.name, record.get("base_sha256"), record.get("base_model"), base, record.get("base_identity"))
    return InfLLMConfig(**record["config"])
