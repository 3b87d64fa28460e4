"""Load a base model with a set of catalogued bricks: the glue shared by compose, route and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.adapters.base import BaseModel, base_model, check_brick_base
from lmbricks.adapters.brick import BrickInfo, load_factors, read_brick
from lmbricks.adapters.catalogue import find_brick, list_bricks
from lmbricks.adapters.compose import Factors
from lmbricks.errors import ConfigError


@dataclass
class BrickSet:
    """A base model and bricks checked against it (factors in fp32)."""

    base: BaseModel
    infos: list[BrickInfo]
    factors: list[Factors]

    @property
    def names(self) -> list[str]:
        return [i.path.name if i.domain is None else i.domain for i in self.infos]

    @property
    def rank(self) -> int:
        return max(p.rank for f in self.factors for p in f.values())

    @property
    def modules(self) -> list[str]:
        return sorted({m for f in self.factors for m in f})


def load_bricks(model_ref: str | Path, refs: Sequence[str | Path] | None = None) -> BrickSet:
    """Resolve bricks (directories or catalogue names; default: the whole catalogue of the model).

    Raises:
        ConfigError: no brick, or a brick trained on another base.
    """
    base = base_model(model_ref)
    paths = [find_brick(r, model_ref) for r in refs] if refs else [e.brick.path for e in list_bricks(model_ref)]
    if not paths:
        raise ConfigError(f"no bricks given and none catalogued for {base.name}")
    infos = [read_brick(p) for p in paths]
    for info in infos:
        check_brick_base(info.name, info.base_sha256, info.base_model, base, info.base_identity)
    return BrickSet(base, infos, [load_factors(p) for p in paths])


def load_base(bset: BrickSet) -> tuple[Any, Any]:
    """(model, tokenizer) of the base."""
    from lmbricks.hub import load_hf_model

    return load_hf_model(bset.base.path)
