"""Evolve configs over the tiny merge family (tests/merge/conftest.py), shared by the evolve tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The text domain the fixture ``home`` holds.
DOMAIN = "evo_text"


def ties_recipe(family: dict[str, Path], weight: float = 0.5, density: float = 0.7) -> dict[str, Any]:
    """TIES of ft1 and ft2 over the tiny family's base (fp32, not normalised)."""
    return {
        "merge_method": "ties",
        "base_model": str(family["base"]),
        "models": [
            {"model": str(family["ft1"]), "parameters": {"weight": weight, "density": density}},
            {"model": str(family["ft2"]), "parameters": {"weight": weight, "density": density}},
        ],
        "parameters": {"normalize": False},
    }


def evolve_dict(family: dict[str, Path], scratch: Path, evaluations: int = 6, **extra: Any) -> dict[str, Any]:
    """An evolve config over :func:`ties_recipe`: weights and per-half densities, bpb on ``evo_text``."""
    cfg: dict[str, Any] = {
        "recipe": ties_recipe(family),
        "free": [
            {"parameter": "weight", "low": 0.0, "high": 1.5},
            {"parameter": "density", "low": 0.2, "high": 1.0, "layers": [[0, 2], [2, 4]]},
        ],
        "fitness": {"bpb": {DOMAIN: 1.0}, "bytes": 1500, "seq_len": 64},
        "budget": {"evaluations": evaluations},
        "optimizer": {"name": "CMA", "seed": 0},
        "scratch": str(scratch),
        "baselines": [{"name": "w=1 d=0.5", "set": {"weight": 1.0, "density": 0.5}}],
    }
    cfg.update(extra)
    return cfg
