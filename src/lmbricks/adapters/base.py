"""Which base model a brick belongs to: a name for people, a content hash for the check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmbricks.checkpoint import content_hash
from lmbricks.errors import ConfigError
from lmbricks.hub import REGISTRY, resolve_model


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: the reference as given, its directory, display name and content hash."""

    ref: str
    path: Path
    name: str
    sha256: str


def base_model(ref: str | Path) -> BaseModel:
    """Resolve a model reference and hash its content (hashes are cached, so this is cheap after once).

    Args:
        ref: registry name, Hugging Face directory or ``.gguf`` file.

    Returns:
        The :class:`BaseModel`; ``name`` is the registry name when there is one, else the directory name.
    """
    path = resolve_model(ref)
    name = str(ref) if str(ref) in REGISTRY else path.name
    return BaseModel(ref=str(ref), path=path, name=name, sha256=content_hash(path))


def check_brick_base(brick_name: str, brick_sha256: str | None, brick_base: str | None, base: BaseModel) -> None:
    """Refuse a brick trained on another base model.

    Raises:
        ConfigError: the brick records a base hash that differs from ``base``'s.
    """
    if brick_sha256 is None:
        return  # a foreign PEFT adapter without lmbricks.json: shapes are checked when loading
    if brick_sha256 != base.sha256:
        raise ConfigError(
            f"brick {brick_name!r} was trained on {brick_base or 'another model'} "
            f"(sha256 {brick_sha256[:12]}), not on {base.name} (sha256 {base.sha256[:12]})"
        )
