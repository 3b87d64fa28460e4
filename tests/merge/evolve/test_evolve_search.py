"""The search loop: it finds a known optimum, and a killed search resumes with the same next candidates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lmbricks.checkpoint import CheckpointReader
from lmbricks.errors import ConfigError
from lmbricks.merge.evolve.config import Budget, FreeParam, OptimizerConfig
from lmbricks.merge.evolve.fitness import CandidateModel, Score
from lmbricks.merge.evolve.log import LOG_NAME, read_log
from lmbricks.merge.evolve.search import Search, best_record
from lmbricks.merge.evolve.space import Dimension, dimensions, from_recipe, to_recipe
from lmbricks.merge.recipe import Recipe, parse_recipe

TARGET = (0.3, 0.9)


def _task_arithmetic(family: dict[str, Path]) -> Recipe:
    return parse_recipe(
        {
            "merge_method": "task_arithmetic",
            "base_model": str(family["base"]),
            "models": [
                {"model": str(family["ft1"]), "parameters": {"weight": 0.5}},
                {"model": str(family["ft2"]), "parameters": {"weight": 0.5}},
            ],
            "parameters": {"normalize": False},
        }
    )


def _distance_fitness(
    family: dict[str, Path], recipe: Recipe, dims: list[Dimension], tmp: Path
) -> Callable[[list[float]], tuple[Score, float, float]]:
    """Squared distance of the merged model (merged for real, in memory) to base + 0.3 d1 + 0.9 d2 (d: task vectors)."""
    base, a, b = (CheckpointReader(family[k]) for k in ("base", "ft1", "ft2"))
    target = {k: base.get(k) + TARGET[0] * (a.get(k) - base.get(k)) + TARGET[1] * (b.get(k) - base.get(k)) for k in a}
    model = CandidateModel("memory", tmp)

    def evaluate(values: list[float]) -> tuple[Score, float, float]:
        seconds = model.load(to_recipe(recipe, dims, values))
        state = model.model.state_dict()
        loss = sum(float((state[k].float() - t).pow(2).sum()) for k, t in target.items())
        return Score(loss, {}), seconds, 0.0

    return evaluate


def _search(family: dict[str, Path], log: Path, evaluations: int) -> tuple[Search, Recipe, list[Dimension]]:
    recipe = _task_arithmetic(family)
    dims = dimensions(recipe, [FreeParam(parameter="weight", low=0.0, high=1.5)])
    optimizer, budget = OptimizerConfig(name="CMA", seed=3), Budget(evaluations=evaluations)
    search = Search(dims, from_recipe(recipe, dims), optimizer, budget, log, "digest-1")
    return search, recipe, dims


def test_search_finds_the_known_optimum(family: dict[str, Path], tmp_path: Path) -> None:
    search, recipe, dims = _search(family, tmp_path / LOG_NAME, 60)
    records = search.run(_distance_fitness(family, recipe, dims, tmp_path))
    assert records[0].values == {"models[0].weight": 0.5, "models[1].weight": 0.5}  # starts at the recipe
    best = best_record(records)
    assert best.values["models[0].weight"] == pytest.approx(TARGET[0], abs=0.1)  # the start, 0.5, is outside
    assert best.values["models[1].weight"] == pytest.approx(TARGET[1], abs=0.1)
    assert best.loss < 0.05 * records[0].loss
    assert len(read_log(tmp_path / LOG_NAME, "digest-1")) == 60


def test_resume_after_a_kill_continues_like_an_uninterrupted_run(family: dict[str, Path], tmp_path: Path) -> None:
    search, recipe, dims = _search(family, tmp_path / "whole" / LOG_NAME, 14)
    whole = search.run(_distance_fitness(family, recipe, dims, tmp_path))

    log = tmp_path / "killed" / LOG_NAME
    first, _, _ = _search(family, log, 14)
    evaluate = _distance_fitness(family, recipe, dims, tmp_path)
    calls = 0

    def dies_at_the_sixth(values: list[float]) -> tuple[Score, float, float]:
        nonlocal calls
        calls += 1
        if calls == 6:
            raise KeyboardInterrupt  # the process dies while the sixth candidate is scored
        return evaluate(values)

    with pytest.raises(KeyboardInterrupt):
        first.run(dies_at_the_sixth)
    assert len(read_log(log, "digest-1")) == 5
    with open(log, "a", encoding="utf-8") as fh:
        fh.write('{"index": 5, "unit": [0.1')  # a torn line: the kill hit the write
    replayed: list[bool] = []
    again, _, _ = _search(family, log, 14)
    resumed = again.run(evaluate, lambda _rec, was_logged: replayed.append(was_logged))
    assert replayed == [True] * 5 + [False] * 9
    assert [r.unit for r in resumed] == [r.unit for r in whole]
    assert [r.loss for r in resumed] == [r.loss for r in whole]


def test_a_log_of_another_search_is_refused(family: dict[str, Path], tmp_path: Path) -> None:
    search, recipe, dims = _search(family, tmp_path / LOG_NAME, 3)
    search.run(_distance_fitness(family, recipe, dims, tmp_path))
    other = Search(search.dims, search.init, search.optimizer, search.budget, search.log, "digest-2")
    with pytest.raises(ConfigError, match="written under another configuration"):
        other.run(_distance_fitness(family, recipe, dims, tmp_path))
    reseeded = Search(search.dims, search.init, OptimizerConfig(seed=4), search.budget, search.log, "digest-1")
    with pytest.raises(ConfigError, match="candidate 1 is not the one this search proposes"):
        reseeded.run(_distance_fitness(family, recipe, dims, tmp_path))
    assert torch.get_num_threads() >= 1
