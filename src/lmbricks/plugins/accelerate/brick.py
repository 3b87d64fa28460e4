"""An acceleration plug-in on disk: ``plugin.safetensors`` plus ``lmbricks.json`` (kind ``accelerate``).

The ``bricks.accelerate`` section of ``lmbricks.json`` records the base model's name, hash and
identity, the ratio, layer and bottleneck, the training recipe and the measured figures. A brick is
refused on another base by the identity check that adapter bricks use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.adapters.base import BaseModel, check_brick_base
from lmbricks.checkpoint import PROVENANCE_FILE
from lmbricks.errors import CheckpointError
from lmbricks.plugins.accelerate.layers import AcceleratePlugin

WEIGHTS = "plugin.safetensors"
KIND = "accelerate"


@dataclass(frozen=True)
class AccelerateBrick:
    """A loaded acceleration brick: the plug-in and its ``bricks.accelerate`` record."""

    path: Path
    plugin: AcceleratePlugin
    record: dict[str, Any]


def save_accelerate_brick(
    out: Path,
    plugin: AcceleratePlugin,
    base: BaseModel,
    *,
    command: str,
    recipe: dict[str, Any],
    measured: Mapping[str, Any],
    force: bool = False,
) -> None:
    """Write ``plugin`` atomically as a brick directory (guarded against the base model's files).

    Args:
        out: the brick directory (replaced only with ``force`` when lmbricks wrote it).
        plugin: the trained plug-in (saved in fp32).
        base: the base model it was trained on.
        command, recipe: provenance.
        measured: figures measured after training (losses, parameters, timings).
    """
    from safetensors.torch import save_file

    from lmbricks.checkpoint import atomic_directory, write_provenance

    record = {
        KIND: {
            "kind": KIND,
            "base_model": base.name,
            "base_sha256": base.sha256,
            "base_identity": base.identity,
            "ratio": plugin.ratio,
            "layer": plugin.layer,
            "bottleneck": plugin.bottleneck,
            "hidden_size": plugin.decompress.up.out_features,
            "parameters": plugin.num_parameters(),
            "measured": dict(measured),
        }
    }
    inputs = {"base": base.path}
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        tensors = {k: v.detach().float().contiguous() for k, v in plugin.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS))
        write_provenance(tmp, command=command, recipe=recipe, inputs=inputs, bricks=record)


def read_record(path: str | Path) -> dict[str, Any]:
    """The ``bricks.accelerate`` section of a brick directory.

    Raises:
        CheckpointError: not a directory, no or malformed ``lmbricks.json``, or another kind of brick.
    """
    path = Path(path).expanduser()
    meta = path / PROVENANCE_FILE
    if not path.is_dir() or not meta.is_file():
        raise CheckpointError(f"{path}: not an acceleration brick (no {PROVENANCE_FILE})")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{meta}: not valid JSON ({exc})") from None
    record = (data.get("bricks") or {}).get(KIND) if isinstance(data, dict) else None
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise CheckpointError(f"{meta}: not an acceleration brick (no bricks.{KIND} section)")
    return record


def load_accelerate_brick(path: str | Path, base: BaseModel) -> AccelerateBrick:
    """Load a brick for ``base``; refused when it was trained on another base.

    Raises:
        CheckpointError: missing or malformed files.
        ConfigError: the brick's recorded base differs from ``base`` (names what differs).
    """
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    record = read_record(path)
    check_brick_base(path.name, record.get("base_sha256"), record.get("base_model"), base, record.get("base_identity"))
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path / WEIGHTS}: missing")
    plugin = AcceleratePlugin(int(record["hidden_size"]), int(record["ratio"]), int(record["layer"]),
                              int(record["bottleneck"]))  # fmt: skip
    try:
        plugin.load_state_dict(load_file(str(path / WEIGHTS)))
    except RuntimeError as exc:
        raise CheckpointError(f"{path / WEIGHTS}: does not match its record ({str(exc).splitlines()[0]})") from None
    return AccelerateBrick(path, plugin.eval(), record)
