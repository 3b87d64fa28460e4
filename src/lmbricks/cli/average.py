"""``lmbricks average`` and ``lmbricks soup``: averaging checkpoints of one model, model soups."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.common import FORCE_HELP, console, print_json, progress_bar, reads_checkpoints, user_errors


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
