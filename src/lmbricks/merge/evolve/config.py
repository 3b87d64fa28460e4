"""The configuration of ``lmbricks merge evolve``: validated before any work, each error naming its field.

Example (``evolve.yaml``)::

    recipe:                      # a mergekit recipe (inline, or the path of a YAML file)
      merge_method: ties
      base_model: smollm2-135m-instruct
      models:
        - model: smollm2-135m-instruct+bricks/smollm2-135m-instruct/code
          parameters: {weight: 0.5, density: 0.7}
        - model: smollm2-135m-instruct+bricks/smollm2-135m-instruct/math
          parameters: {weight: 0.5, density: 0.7}
      dtype: bfloat16
    free:                        # the searched parameters
      - {parameter: weight, low: 0.0, high: 1.5}
      - {parameter: density, low: 0.1, high: 1.0, layers: [[0, 15], [15, 30]]}
    fitness: {bpb: {code: 1.0, math: 1.0}, bytes: 4000}
    budget: {evaluations: 40, minutes: 10}
    optimizer: {name: CMA, seed: 0}
    baselines:
      - {name: "w=1/n d=0.5", set: {weight: 0.5, density: 0.5}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmbricks.config import load, load_yaml, suggest

#: nevergrad optimisers offered (sequential ask/tell, seeded through the parametrisation).
OPTIMIZERS: tuple[str, ...] = ("CMA", "DiagonalCMA", "TwoPointsDE", "NGOpt", "RandomSearch")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FreeParam(_Strict):
    """One searched parameter of the recipe, per model (and optionally per layer group).

    Attributes:
        parameter: a per-model parameter of the merge method (``weight``, ``density``, ...).
        models: indices into the recipe's ``models:`` (default: every entry that is not the base).
        low: smallest value searched.
        high: largest value searched.
        layers: layer groups ``[start, end)``, one value each (written as filter entries); tensors
            outside every group (embeddings, final norm, head) take the first group's value.
    """

    parameter: str
    models: list[int] | None = None
    low: float
    high: float
    layers: list[tuple[int, int]] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FreeParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        for start, end in self.layers or []:
            if start < 0 or end <= start:
                raise ValueError(f"layer group [{start}, {end}) must satisfy 0 <= start < end")
        spans = sorted(self.layers or [])
        for (_s0, e0), (s1, _e1) in zip(spans, spans[1:], strict=False):
            if s1 < e0:
                raise ValueError(f"layer groups overlap: {sorted(self.layers or [])}")
        if self.layers is not None and not self.layers:
            raise ValueError("layers: give at least one [start, end) group, or leave it out")
        return self


class FewshotTerm(_Strict):
    """Few-shot accuracy (``eval fewshot``) on CHAMP's *validation* problems, subtracted with ``weight``."""

    task: Literal["champ"] = "champ"
    shots: int = Field(0, ge=0)
    n: int = Field(20, ge=1, description="validation problems scored per candidate")
    weight: float = Field(1.0, gt=0)


class FitnessConfig(_Strict):
    """What a candidate is scored on (lower is better): weighted mean bits per byte minus weighted accuracy.

    Attributes:
        bpb: ``{domain: weight}``; bits per byte on each domain's *validation* split (the search
            never reads the test split; the final comparison does).
        bytes: bytes of text per domain (a deterministic prefix of the split).
        documents: spread ``bytes`` over the split's first ``documents`` documents, an equal share
            (prefix) of each, instead of one prefix of the joined split (which may be one document).
        tokens: optional cap on the scored tokens per domain.
        seq_len: window length of the scoring passes.
        fewshot: an optional few-shot accuracy term.
    """

    bpb: dict[str, float] = Field(default_factory=dict)
    bytes: int = Field(4000, ge=1)
    documents: int | None = Field(None, ge=1, description="equal shares of this many documents")
    tokens: int | None = Field(None, ge=1)
    seq_len: int = Field(512, ge=2)
    fewshot: FewshotTerm | None = None

    @model_validator(mode="after")
    def _some_term(self) -> FitnessConfig:
        if not self.bpb and self.fewshot is None:
            raise ValueError("give fitness.bpb (domain: weight) and/or fitness.fewshot")
        for domain, w in self.bpb.items():
            if w <= 0:
                raise ValueError(f"bpb.{domain}: the weight must be above 0, got {w}")
        return self


class Budget(_Strict):
    """When the search stops: after ``evaluations`` candidates in all (across resumes), or ``minutes`` of this run."""

    evaluations: int = Field(40, ge=1)
    minutes: float | None = Field(None, gt=0)


class OptimizerConfig(_Strict):
    """The nevergrad optimiser (CMA-ES by default) and its seed."""

    name: str = "CMA"
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {name!r}{suggest(name, OPTIMIZERS)} (choose from {', '.join(OPTIMIZERS)})"
            )
        return name


class Baseline(_Strict):
    """A hand-set recipe to compare with: every free parameter named in ``set`` takes that value."""

    name: str
    set: dict[str, float]


class EvolveConfig(_Strict):
    """The whole ``merge evolve`` configuration (see the module docstring).

    Attributes:
        recipe: a mergekit recipe with a ``models:`` list, inline or as a YAML path; its values
            are the search's starting point.
        free: the searched parameters.
        fitness: the score (validation split).
        budget: evaluations and minutes.
        optimizer: nevergrad optimiser and seed.
        mode: ``memory`` (merged tensors copied into one loaded model, nothing written) or
            ``write`` (each candidate merged into the scratch directory and loaded from there).
        scratch: where the evaluation log (``evals.jsonl``) lives; default ``OUT.scratch`` beside OUT.
        baselines: hand-set recipes scored on the validation and test splits beside the best.
    """

    recipe: dict[str, Any] | Path
    free: list[FreeParam] = Field(min_length=1)
    fitness: FitnessConfig
    budget: Budget = Field(default_factory=lambda: Budget.model_validate({}))
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig.model_validate({}))
    mode: Literal["memory", "write"] = "memory"
    scratch: Path | None = None
    baselines: list[Baseline] = Field(default_factory=list)

    def recipe_dict(self) -> dict[str, Any]:
        """The recipe as a dict (read from its file when a path was given)."""
        if isinstance(self.recipe, Path):
            data = load_yaml(self.recipe)
            return data if isinstance(data, dict) else {"invalid": data}
        return dict(self.recipe)


def load_evolve_config(path: str | Path) -> EvolveConfig:
    """Read and validate an evolve YAML; a relative ``recipe`` path is taken from the YAML's folder.

    Raises:
        ConfigError: naming the file, the key path and the value at fault.
    """
    cfg = load(EvolveConfig, path, what="evolve config")
    if isinstance(cfg.recipe, Path) and not cfg.recipe.is_absolute():
        cfg = cfg.model_copy(update={"recipe": Path(path).parent / cfg.recipe})
    return cfg
