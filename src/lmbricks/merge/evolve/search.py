"""The search loop: a seeded nevergrad optimiser asks for points, the fitness scores them, the log keeps them.

The optimiser works in the unit cube ``[0, 1]^d`` (:func:`~lmbricks.merge.evolve.space.to_unit`),
starts at the recipe's own values (suggested first, so candidate 0 is the starting recipe) and runs
sequentially (one worker). Every scored candidate is appended to ``evals.jsonl`` before the next is
asked for. **Resume** replays the log: the optimiser, rebuilt with the same seed, is asked again for
each logged candidate (the proposal must equal the logged point: the log belongs to this search) and
told the logged loss, which restores its state exactly; the search then continues with the same next
candidate an uninterrupted run would have proposed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmbricks.errors import ConfigError
from lmbricks.merge.evolve.config import Budget, OptimizerConfig
from lmbricks.merge.evolve.fitness import Score
from lmbricks.merge.evolve.log import EvalRecord, append_record, read_log, start_log
from lmbricks.merge.evolve.space import Dimension, from_unit

#: ``values -> (score, merge seconds, evaluation seconds)``.
EvaluateFn = Callable[[list[float]], tuple[Score, float, float]]


def population(n_dims: int) -> int:
    """CMA-ES's default population, ``4 + floor(3 ln d)``: the size of a generation in the log and plot."""
    return 4 + int(3 * math.log(max(n_dims, 1)))


def make_optimizer(cfg: OptimizerConfig, init_unit: Sequence[float]) -> Any:
    """A nevergrad optimiser over ``[0, 1]^d``, seeded, with the starting point suggested first."""
    import nevergrad as ng

    start = np.asarray(init_unit, dtype=np.float64)
    param = ng.p.Array(init=start, lower=0.0, upper=1.0)
    param.random_state = np.random.RandomState(cfg.seed)
    opt = ng.optimizers.registry[cfg.name](parametrization=param, budget=None, num_workers=1)
    opt.suggest(start)
    return opt


@dataclass
class Search:
    """One search: its dimensions, optimiser settings, budget, and the log it keeps.

    Attributes:
        dims: the dimensions.
        init: the starting values (the recipe's).
        optimizer: the optimiser's name and seed.
        budget: evaluations in all, minutes for this run.
        log: the path of ``evals.jsonl``.
        digest: the configuration hash written in the log's header.
    """

    dims: list[Dimension]
    init: list[float]
    optimizer: OptimizerConfig
    budget: Budget
    log: Path
    digest: str

    def run(
        self, evaluate: EvaluateFn, on_record: Callable[[EvalRecord, bool], None] | None = None
    ) -> list[EvalRecord]:
        """Replay the log, then score new candidates until the budget is spent.

        Args:
            evaluate: scores a point given as values (one per dimension).
            on_record: called with each record and whether it was replayed from the log (progress).

        Returns:
            Every record, logged ones first.

        Raises:
            ConfigError: the log belongs to another search (header hash, or a logged point the
                optimiser does not propose again).
        """
        from lmbricks.merge.evolve.space import to_unit

        opt = make_optimizer(self.optimizer, to_unit(self.dims, self.init))
        records = read_log(self.log, self.digest)
        start_log(self.log, self.digest, [d.name for d in self.dims], records)
        for rec in records:
            cand = opt.ask()
            if not np.allclose(np.asarray(cand.value), np.asarray(rec.unit), rtol=0.0, atol=1e-9):
                raise ConfigError(
                    f"{self.log}: candidate {rec.index} is not the one this search proposes again; the log was "
                    "written by another search (delete it or choose another scratch directory)"
                )
            opt.tell(cand, rec.loss)
            if on_record is not None:
                on_record(rec, True)
        pop = population(len(self.dims))
        t0 = time.perf_counter()
        while len(records) < self.budget.evaluations:
            if self.budget.minutes is not None and time.perf_counter() - t0 >= self.budget.minutes * 60:
                break
            cand = opt.ask()
            unit = [float(u) for u in np.asarray(cand.value)]
            values = from_unit(self.dims, unit)
            score, merge_s, eval_s = evaluate(values)
            idx = len(records)
            rec = EvalRecord(idx, idx // pop, unit, {d.name: v for d, v in zip(self.dims, values, strict=True)},
                             score.loss, score.bpb, score.accuracy, merge_s, eval_s)  # fmt: skip
            append_record(self.log, rec)
            opt.tell(cand, score.loss)
            records.append(rec)
            if on_record is not None:
                on_record(rec, False)
        return records


def best_record(records: Sequence[EvalRecord]) -> EvalRecord:
    """The record with the lowest loss (the earliest among equals)."""
    return min(records, key=lambda r: (r.loss, r.index))
