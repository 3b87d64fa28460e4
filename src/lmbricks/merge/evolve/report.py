"""What a search leaves behind besides the model: the fitness plot and the JSON summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmbricks.merge.evolve.log import EvalRecord


def timings(records: Sequence[EvalRecord]) -> dict[str, float]:
    """Seconds per candidate merging and scoring, evaluations per hour, and the share of time merging.

    Returns:
        ``{"merge_s", "eval_s"}`` (means per candidate), ``"evaluations_per_hour"`` (3600 over
        their sum) and ``"merge_share"`` (merging over merging plus scoring).
    """
    n = max(len(records), 1)
    merge_s = sum(r.merge_s for r in records) / n
    eval_s = sum(r.eval_s for r in records) / n
    total = merge_s + eval_s
    return {
        "merge_s": merge_s,
        "eval_s": eval_s,
        "evaluations_per_hour": 3600.0 / total if total > 0 else 0.0,
        "merge_share": merge_s / total if total > 0 else 0.0,
    }


def plot_fitness(
    path: Path, records: Sequence[EvalRecord], population: int, baselines: dict[str, float] | None = None
) -> Path:
    """Every candidate's loss against its generation, the best so far, and the baselines as flat lines.

    Args:
        path: the PNG to write.
        records: the search's records.
        population: candidates per generation (the x axis is ``index / population``).
        baselines: ``{name: validation loss}``.

    Returns:
        ``path``.
    """
    from lmbricks.report.plots import line_chart

    xs = [r.index / population for r in records]
    best: list[float] = []
    for r in records:
        best.append(min(r.loss, best[-1]) if best else r.loss)
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {
        "candidates": (xs, [r.loss for r in records]),
        "best so far": (xs, best),
    }
    for name, loss in (baselines or {}).items():
        series[name] = ([0.0, xs[-1] if xs else 1.0], [loss, loss])
    return line_chart(path, series, "merge evolve: fitness by generation (validation split)",
                      "generation", "fitness (lower is better)")  # fmt: skip


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """Write the JSON summary (sorted keys, indented)."""
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
