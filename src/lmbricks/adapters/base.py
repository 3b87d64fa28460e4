"""Which base model a brick belongs to: a name for people, a content hash for the check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmbricks.checkpoint.provenance import check_recorded_base, content_hash, model_identity
from lmbricks.errors import ConfigError
from lmbricks.hub import REGISTRY, resolve_model

if TYPE_CHECKING:
    from lmbricks.adapters.brick import BrickInfo


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: the reference as given, its directory, display name and content hash."""

    ref: str
    path: Path
    name: str
    sha256: str
    identity: dict[str, Any] | None = None  # ModelIdentity.to_record(); None for a single file


def base_model(ref: str | Path) -> BaseModel:
    """Resolve a model reference and hash its content (hashes are cached, so this is cheap after once).

    Args:
        ref: registry name, Hugging Face directory or ``.gguf`` file.

    Returns:
        The :class:`BaseModel`; ``name`` is the registry name when there is one, else the directory name.
    """
    path = resolve_model(ref)
    name = str(ref) if str(ref) in REGISTRY else path.name
    identity = model_identity(path)
    record = identity.to_record() if identity is not None else None
    return BaseModel(ref=str(ref), path=path, name=name, sha256=content_hash(path), identity=record)


def check_brick_base(
    brick_name: str,
    brick_sha256: str | None,
    brick_base: str | None,
    base: BaseModel,
    brick_identity: Mapping[str, Any] | None = None,
) -> None:
    """Refuse a brick trained on another base model (see :func:`checkpoint.check_recorded_base`).

    Raises:
        ConfigError: the brick records a base identity that differs from ``base``'s; the message
            names what differs (weights, a config field, the tokenizer).
    """
    check_recorded_base(f"brick {brick_name!r}", brick_sha256, brick_identity, brick_base, base.path, base.name)


def recorded_base(info: BrickInfo) -> str:
    """The base model a brick records: its registry name, else the base directory named in ``lmbricks.json``.

    Raises:
        ConfigError: the brick records neither (pass the model explicitly).
    """
    from lmbricks.checkpoint.provenance import resolve_reference

    if info.base_model in REGISTRY:
        return str(info.base_model)
    for item in info.record.get("inputs", []):
        if item.get("name") != "base":
            continue
        found = resolve_reference(str(item.get("ref") or ""), info.path) if item.get("ref") else None
        if isinstance(found, Path):
            return str(found)
        if Path(item.get("path", "")).is_dir():  # records written before 0.2 kept the absolute path
            return str(item["path"])
    raise ConfigError(f"{info.path}: its base model {info.base_model!r} cannot be found; pass the model explicitly")
