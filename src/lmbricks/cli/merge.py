"""``lmbricks merge``, ``lmbricks merge methods``, ``lmbricks average``, ``lmbricks soup``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from lmbricks.cli.common import (
    FORCE_HELP,
    console,
    print_json,
    print_list,
    progress_bar,
    reads_checkpoints,
    user_errors,
)


@reads_checkpoints
def merge(
    recipe: str = typer.Argument(..., help="mergekit-style YAML recipe, or the word 'methods' to list methods."),
    out: Path | None = typer.Argument(None, help="Output model directory (must not exist)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    max_memory: str = typer.Option("1GB", "--max-memory", help="Read-ahead and write-queue budget."),
    max_shard: str = typer.Option("2GB", "--max-shard", help="Largest output shard."),
    validate_only: bool = typer.Option(False, "--validate", help="Check the recipe and inputs, write nothing."),
    as_json: bool = typer.Option(False, "--json", help="'merge methods': print JSON."),
) -> None:
    """Merge models from a mergekit-compatible recipe, streaming tensor by tensor.

    Example: lmbricks merge recipe.yaml out/merged --max-memory 1GB
    """
    if recipe == "methods" and out is None:
        _methods(as_json)
        return
    if out is None:
        raise typer.BadParameter("OUT is required", param_hint="OUT")
    _merge(recipe, out, force, max_memory, max_shard, validate_only)


@user_errors
def _merge(recipe: str, out: Path, force: bool, max_memory: str, max_shard: str, validate_only: bool) -> None:
    from lmbricks.merge import execute, load_recipe, plan_merge

    plan = plan_merge(load_recipe(recipe), out, force=force, inputs=[recipe])
    if validate_only:
        console.print(f"ok: {plan.method.name}, {len(plan.inputs)} inputs, {len(plan.tensors)} tensors")
        return
    with progress_bar() as bar:
        task = bar.add_task("merging", total=len(plan.tensors))
        path = execute(
            plan,
            out,
            force=force,
            max_memory=max_memory,
            max_shard=max_shard,
            on_tensor=lambda _n, _b: bar.advance(task),
            command=shlex.join(["lmbricks", *sys.argv[1:]]),
        )
    console.print(f"wrote {path}")


def _methods(as_json: bool) -> None:
    from lmbricks.merge import all_methods

    methods = all_methods()
    if as_json:
        print_json([m.to_dict() for m in methods])
        return
    rows = [(m.name, m.base, ", ".join(p.label for p in m.params), m.formula, m.reference) for m in methods]
    print_list("merge methods", ("method", "base", "parameters", "formula", "reference"), rows, key="method")


@user_errors
@reads_checkpoints
def average(
    inputs: list[Path] = typer.Argument(..., help="Checkpoints to average, then the output directory last."),
    weights: list[float] | None = typer.Option(None, "--weights", help="One weight per checkpoint."),
    ema: float | None = typer.Option(None, "--ema", help="EMA decay over the checkpoints in the given order."),
    last_k: int | None = typer.Option(None, "--last-k", help="LAWA: average the last K checkpoints of a run dir."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    max_memory: str = typer.Option("1GB", "--max-memory", help="Read-ahead and write-queue budget."),
) -> None:
    """Average checkpoints of one model: uniform, weighted, EMA-ordered, or the last K of a run (LAWA).

    Example: lmbricks average runs/a/checkpoints/step-000100 runs/a/checkpoints/step-000200 out/avg
    """
    from lmbricks.average import average_checkpoints, last_k_checkpoints

    if len(inputs) < 2:
        raise typer.BadParameter("give the checkpoints (or a run dir with --last-k) and OUT")
    *ckpts, out = inputs
    if last_k is not None:
        if len(ckpts) != 1:
            raise typer.BadParameter("--last-k takes exactly one RUN_DIR")
        ckpts = last_k_checkpoints(ckpts[0], last_k)
    with progress_bar() as bar:
        task = bar.add_task("averaging", total=None)
        path = average_checkpoints(
            ckpts,
            out,
            weights=weights or None,
            ema=ema,
            force=force,
            max_memory=max_memory,
            on_tensor=lambda _n, _b: bar.advance(task),
        )
    console.print(f"wrote {path} from {len(ckpts)} checkpoints")


@user_errors
@reads_checkpoints
def soup(
    inputs: list[Path] = typer.Argument(..., help="Candidate models, then the output directory last."),
    domain: str = typer.Option(..., "--eval", help="Held-out domain for perplexity (lmbricks data)."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy soup instead of the uniform soup."),
    split: str = typer.Option("validation", "--split", help="Data split used for evaluation."),
    max_tokens: int = typer.Option(20000, "--max-tokens", help="Tokens evaluated per model."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Model soup: the uniform average of the candidates, or a greedy soup (held-out perplexity).

    Example: lmbricks soup ft1 ft2 ft3 out/soup --eval prose --greedy
    """
    from lmbricks.average import perplexity_evaluator, soup_models
    from lmbricks.checkpoint import check_output

    if len(inputs) < 2:
        raise typer.BadParameter("give at least one candidate and OUT")
    *cands, out = inputs
    check_output(out, cands, force)  # before the evaluation data are read
    evaluate = perplexity_evaluator(domain, split=split, max_tokens=max_tokens)
    result = soup_models(cands, out, evaluate=evaluate, greedy=greedy, force=force)
    print_json(result.to_dict())


def register(app: typer.Typer) -> None:
    """Add ``merge``, ``average`` and ``soup`` to the top-level app."""
    app.command(name="merge")(merge)
    app.command(name="average")(average)
    app.command(name="soup")(soup)
