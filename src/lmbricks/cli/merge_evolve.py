"""``lmbricks merge evolve CONFIG.yaml OUT``: evolutionary search over a recipe's free parameters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lmbricks.cli.common import (
    FORCE_HELP,
    command_line,
    console,
    print_json,
    progress_bar,
    reads_checkpoints,
    user_errors,
)

if TYPE_CHECKING:
    from lmbricks.merge.evolve import EvalRecord


@user_errors
@reads_checkpoints
def evolve(
    config: Path = typer.Argument(..., help="Evolve YAML: recipe, free parameters, fitness, budget, optimizer."),
    out: Path = typer.Argument(
        ..., help="Output directory: best.yaml, model/, evals.jsonl, summary.json, fitness.png."
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    evaluations: int | None = typer.Option(None, "--evaluations", help="Override budget.evaluations (in all)."),
    minutes: float | None = typer.Option(None, "--minutes", help="Override budget.minutes (this run)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Search merge weights and densities with CMA-ES on validation text, then compare on test text.

    A killed run resumes from the evaluation log in the scratch directory (OUT.scratch by default).

    Example: lmbricks merge evolve evolve.yaml out/evolved --evaluations 40
    """
    from lmbricks.merge.evolve import evolve as run_evolve
    from lmbricks.merge.evolve import load_evolve_config

    cfg = load_evolve_config(config)
    overrides = {k: v for k, v in (("evaluations", evaluations), ("minutes", minutes)) if v is not None}
    if overrides:
        from lmbricks.config import validate
        from lmbricks.merge.evolve.config import Budget

        budget = validate(Budget, {**cfg.budget.model_dump(), **overrides}, "command line", what="budget")
        cfg = cfg.model_copy(update={"budget": budget})
    with progress_bar() as bar:
        task = bar.add_task("evolving", total=cfg.budget.evaluations)

        def on_record(rec: EvalRecord, _replayed: bool) -> None:
            bar.update(task, advance=1, description=f"evolving (last fitness {rec.loss:.4f})")

        def on_stage(name: str, n: int | None) -> None:
            if name:
                bar.update(task, description=name, total=n, completed=0)
            elif n:
                bar.advance(task, n)

        result = run_evolve(cfg, out, force=force, inputs=[config], command=command_line(),
                            on_record=on_record, on_stage=on_stage)  # fmt: skip
    if as_json:
        from dataclasses import asdict

        print_json({**asdict(result), "out": str(result.out)})
        return
    ev, start = result.test["evolved"], result.test["start"]
    console.print(
        f"{result.evaluations} candidates ({result.resumed} from the log), best validation fitness "
        f"{result.best.loss:.4f}; test fitness {ev['loss']:.4f} (start {start['loss']:.4f}); "
        f"{result.timings['evaluations_per_hour']:.0f} evaluations/hour, "
        f"{100 * result.timings['merge_share']:.0f}% of it merging"
    )
    console.print(f"wrote {result.out}")
