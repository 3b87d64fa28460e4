"""``merge evolve``'s pipeline: validate, search on the validation split, compare on the test split, write OUT.

OUT holds ``best.yaml`` (a plain recipe that ``lmbricks merge`` reproduces bit for bit),
``model/`` (that merge), ``evals.jsonl`` (every candidate), ``summary.json`` (the best point, the
validation and test scores of the evolved recipe, the starting recipe, the baselines and the base
model, and the timings) and ``fitness.png``. The evaluation log is kept in the scratch directory
while the search runs, so a killed run resumes from it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lmbricks.errors import ConfigError
from lmbricks.merge.evolve.config import EvolveConfig
from lmbricks.merge.evolve.fitness import CandidateModel, Evaluation, Score, prepare, score_model
from lmbricks.merge.evolve.log import LOG_NAME, EvalRecord, config_hash
from lmbricks.merge.evolve.report import plot_fitness, timings, write_summary
from lmbricks.merge.evolve.search import Search, best_record, population
from lmbricks.merge.evolve.space import Dimension, dimensions, from_recipe, to_recipe
from lmbricks.merge.plan import plan_merge
from lmbricks.merge.recipe import Recipe, parse_recipe

#: ``(stage name, items or None)`` starts a stage; ``("", n)`` advances it.
StageFn = Callable[[str, int | None], None]


@dataclass(frozen=True)
class EvolveResult:
    """What a search produced.

    Attributes:
        out: the output directory.
        best: the best candidate's record (validation split).
        evaluations: candidates scored in all (resumed ones included).
        resumed: candidates replayed from an earlier run's log.
        test: ``{name: {"loss", "bpb", "accuracy"}}`` on the test split: ``evolved``, ``start``,
            each baseline, ``base model``.
        validation: the same on the validation split.
        timings: see :func:`~lmbricks.merge.evolve.report.timings`.
    """

    out: Path
    best: EvalRecord
    evaluations: int
    resumed: int
    test: dict[str, dict[str, Any]]
    validation: dict[str, dict[str, Any]]
    timings: dict[str, float]


@dataclass(frozen=True)
class _Prepared:
    recipe: Recipe
    dims: list[Dimension]
    init: list[float]
    baselines: dict[str, Recipe]
    validation: Evaluation
    test: Evaluation
    scratch: Path


def _prepare(cfg: EvolveConfig, out: Path, force: bool, inputs: list[Path]) -> _Prepared:
    """Every check before any work: recipe and inputs, space, extremes, baselines, texts, output."""
    from lmbricks.checkpoint import check_apart, check_output
    from lmbricks.hub import reference_paths

    recipe = parse_recipe(cfg.recipe_dict(), str(cfg.recipe) if isinstance(cfg.recipe, Path) else "recipe")
    if isinstance(cfg.recipe, Path):
        inputs = [*inputs, cfg.recipe]
    refs = [p for ref in recipe.referenced_models() for p in reference_paths(ref)]
    check_output(out, [*inputs, *refs], force)
    scratch = (cfg.scratch or out.with_name(out.name + ".scratch")).absolute()
    check_apart(scratch, [*inputs, *refs])
    plan = plan_merge(recipe)
    dims = dimensions(recipe, cfg.free, min(m.num_layers for m in plan.inputs.values()))
    init = from_recipe(recipe, dims)
    for corner, label in (([d.low for d in dims], "low"), ([d.high for d in dims], "high")):
        try:
            plan_merge(to_recipe(recipe, dims, corner))
        except ConfigError as exc:
            raise ConfigError(
                f"free: every parameter at its {label} bound gives a recipe the merge refuses: {exc}"
            ) from None
    baselines = {b.name: _baseline(recipe, dims, init, b.set, f"baselines[{i}]") for i, b in enumerate(cfg.baselines)}
    for r in baselines.values():
        plan_merge(r)
    return _Prepared(
        recipe, dims, init, baselines, prepare(cfg.fitness, "validation"), prepare(cfg.fitness, "test"), scratch
    )


def _baseline(recipe: Recipe, dims: list[Dimension], init: list[float], values: dict[str, float], at: str) -> Recipe:
    """The starting recipe with every dimension of each named parameter set to its value."""
    known = {d.parameter for d in dims}
    for name in values:
        if name not in known:
            raise ConfigError(f"{at}.set.{name}: not a free parameter (free: {', '.join(sorted(known))})")
    return to_recipe(recipe, dims, [values.get(d.parameter, v) for d, v in zip(dims, init, strict=True)])


def _digest(cfg: EvolveConfig, recipe: Recipe) -> str:
    """The hash of what fixes the candidates' sequence (budget, mode and scratch may change on resume)."""
    fitness = cfg.fitness.model_dump()
    if fitness["documents"] is None:  # unset: the hash of a log written before the field existed
        del fitness["documents"]
    parts = {"recipe": recipe.to_dict(), "free": [f.model_dump() for f in cfg.free],
             "fitness": fitness, "optimizer": cfg.optimizer.model_dump()}  # fmt: skip
    return config_hash(parts)


def _score_dict(s: Score) -> dict[str, Any]:
    return {"loss": s.loss, "bpb": s.bpb, "accuracy": s.accuracy}


def evolve(
    cfg: EvolveConfig,
    out: str | Path,
    *,
    force: bool = False,
    inputs: list[Path] | None = None,
    command: str = "lmbricks.merge.evolve",
    on_record: Callable[[EvalRecord, bool], None] | None = None,
    on_stage: StageFn | None = None,
) -> EvolveResult:
    """Search the config's free recipe parameters, then write the best recipe, its merge and the report.

    Args:
        cfg: the validated configuration.
        out: the output directory (refused if it exists, unless ``force``; never an input).
        force: replace an existing output that lmbricks wrote.
        inputs: more paths the output keeps apart from (the config file).
        command: recorded in ``lmbricks.json``.
        on_record: called with each scored (or replayed, second argument True) candidate.
        on_stage: called with ``(stage, items)`` when the final comparison starts (progress).

    Returns:
        The :class:`EvolveResult`.

    Raises:
        ConfigError / CheckpointError / MergeError: naming the field, file or tensor at fault; every
            check of the configuration runs before the first candidate is merged.
    """
    out = Path(out).expanduser().absolute()
    prep = _prepare(cfg, out, force, list(inputs or []))
    candidate = CandidateModel(cfg.mode, prep.scratch)

    def evaluate(values: list[float]) -> tuple[Score, float, float]:
        merge_s = candidate.load(to_recipe(prep.recipe, prep.dims, values))
        t0 = time.perf_counter()
        score = score_model(candidate.model, candidate.tokenizer, cfg.fitness, prep.validation)
        return score, merge_s, time.perf_counter() - t0

    replayed = 0

    def record(rec: EvalRecord, was_logged: bool) -> None:
        nonlocal replayed
        replayed += was_logged
        if on_record is not None:
            on_record(rec, was_logged)

    log = prep.scratch / LOG_NAME
    search = Search(prep.dims, prep.init, cfg.optimizer, cfg.budget, log, _digest(cfg, prep.recipe))
    records = search.run(evaluate, record)
    best = best_record(records)
    best_recipe = to_recipe(prep.recipe, prep.dims, [best.values[d.name] for d in prep.dims])
    compared = {"evolved": best_recipe, "start": to_recipe(prep.recipe, prep.dims, prep.init), **prep.baselines}
    if on_stage is not None:
        on_stage("scoring the evolved, starting and hand-set recipes", len(compared) + 1)
    validation, test = _compare(cfg, prep, candidate, compared, on_stage)
    result = EvolveResult(out, best, len(records), replayed, test, validation, timings(records))
    _write(cfg, prep, out, force, command, best_recipe, records, result, log)
    return result


def _compare(
    cfg: EvolveConfig, prep: _Prepared, candidate: CandidateModel, compared: dict[str, Recipe], on_stage: StageFn | None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Validation and test scores of each compared recipe, and of the base model alone."""
    from lmbricks.hub import load_hf_model

    validation: dict[str, dict[str, Any]] = {}
    test: dict[str, dict[str, Any]] = {}
    for name, r in compared.items():
        candidate.load(r)
        validation[name] = _score_dict(score_model(candidate.model, candidate.tokenizer, cfg.fitness, prep.validation))
        test[name] = _score_dict(score_model(candidate.model, candidate.tokenizer, cfg.fitness, prep.test))
        if on_stage is not None:
            on_stage("", 1)
    if prep.recipe.base_model is not None:
        plan = plan_merge(prep.recipe)
        model, tokenizer = load_hf_model(plan.inputs[prep.recipe.base_model].path, dtype=plan.out_dtype)
        validation["base model"] = _score_dict(score_model(model, tokenizer, cfg.fitness, prep.validation))
        test["base model"] = _score_dict(score_model(model, tokenizer, cfg.fitness, prep.test))
    if on_stage is not None:
        on_stage("", 1)
    return validation, test


def _write(
    cfg: EvolveConfig,
    prep: _Prepared,
    out: Path,
    force: bool,
    command: str,
    best_recipe: Recipe,
    records: list[EvalRecord],
    result: EvolveResult,
    log: Path,
) -> None:
    """Write OUT atomically: best.yaml, model/, evals.jsonl, summary.json, fitness.png, lmbricks.json."""
    from lmbricks.checkpoint import atomic_directory, write_provenance
    from lmbricks.merge.executor import execute

    pop = population(len(prep.dims))
    with atomic_directory(out, force=force) as tmp:
        (tmp / "best.yaml").write_text(yaml.safe_dump(best_recipe.to_dict(), sort_keys=False), encoding="utf-8")
        plan = plan_merge(best_recipe, tmp / "model")
        execute(plan, tmp / "model", command=f"{command} (best recipe)")
        shutil.copyfile(log, tmp / LOG_NAME)
        baselines = {f"{k} (validation)": v["loss"] for k, v in result.validation.items() if k != "evolved"}
        plot_fitness(tmp / "fitness.png", records, pop, baselines)
        summary = {**asdict(result), "out": str(out), "dimensions": [d.name for d in prep.dims], "population": pop,
                   "config": cfg.model_dump(mode="json")}  # fmt: skip
        write_summary(tmp / "summary.json", summary)
        bricks = {"kind": "merge evolve", "evaluations": len(records), "best_loss": result.best.loss}
        write_provenance(tmp, command=command, recipe=best_recipe.to_dict(), inputs=plan.input_paths(), bricks=bricks)
