"""Evolutionary merge search (``lmbricks merge evolve``): CMA-ES over a recipe's free parameters.

The counterpart of mergekit-evolve and of Sakana's evolutionary model merge (arXiv 2403.13187),
with lmbricks' own executor and evaluation: candidates are merged into one loaded model (or into a
scratch directory) and scored on the validation split; the test split is read only for the final
comparison. Files: :mod:`.config` (the YAML), :mod:`.space` (parameters <-> recipe),
:mod:`.fitness` (merging and scoring a candidate), :mod:`.search` (the loop and resume),
:mod:`.log` (``evals.jsonl``), :mod:`.report` (plot, summary), :mod:`.pipeline` (all of it).

Example:
    >>> from lmbricks.merge.evolve import evolve, load_evolve_config  # doctest: +SKIP
    >>> evolve(load_evolve_config("evolve.yaml"), "out/evolved")  # doctest: +SKIP
"""

from __future__ import annotations

from lmbricks.merge.evolve.config import EvolveConfig, load_evolve_config
from lmbricks.merge.evolve.log import EvalRecord
from lmbricks.merge.evolve.pipeline import EvolveResult, evolve
from lmbricks.merge.evolve.space import Dimension, dimensions, from_recipe, to_recipe

__all__ = [
    "Dimension",
    "EvalRecord",
    "EvolveConfig",
    "EvolveResult",
    "dimensions",
    "evolve",
    "from_recipe",
    "load_evolve_config",
    "to_recipe",
]
