"""``lmbricks adapters compose``: combine bricks into one adapter, or into a model's weights."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.adapters_options import FORCE, MODEL, parse_weights
from lmbricks.cli.common import command_line, console, err_console, reads_checkpoints, user_errors


@user_errors
@reads_checkpoints
def compose(
    bricks: list[str] = typer.Argument(..., help="bricks (directories or catalogue names), then OUT"),
    out: Path = typer.Argument(..., help="output directory"),
    method: str = typer.Option("cat", help="cat | svd | linear | ties | dare | lorahub"),
    model: str = MODEL,
    weights: str | None = typer.Option(None, help="comma-separated weights (lorahub: searched if omitted)"),
    rank: int | None = typer.Option(None, help="output rank for svd / ties / dare"),
    density: float | None = typer.Option(None, help="kept fraction for ties (0.2) / dare (0.5)"),
    domain: str | None = typer.Option(None, help="lorahub: domain of the few-shot examples (validation split)"),
    examples: int = typer.Option(5, help="lorahub: number of few-shot examples"),
    budget: int = typer.Option(40, help="lorahub: nevergrad evaluations"),
    seed: int = typer.Option(42, help="lorahub search / dare drop seed"),
    merge: bool = typer.Option(False, "--merge", help="write base + composed update as a full model"),
    force: bool = FORCE,
) -> None:
    """Combine bricks into one adapter (or, with --merge, into a model's weights).

    Example: lmbricks adapters compose zh math out/zh+math --method lorahub --domain math
    """
    from lmbricks.adapters.pipeline import ComposeConfig, compose_bricks, configure

    cfg = configure(
        ComposeConfig,
        model=model,
        bricks=bricks,
        method=method,
        weights=parse_weights(weights, len(bricks)),
        rank=rank,
        density=density,
        domain=domain,
        examples=examples,
        budget=budget,
        seed=seed,
        merge=merge,
    )
    result = compose_bricks(
        cfg,
        out,
        force=force,
        command=command_line(),
        on_eval=lambda i, v: err_console.print(f"lorahub eval {i}/{budget}: objective {v:.4f}", highlight=False),
    )
    console.print(
        f"{out}: {method} of {len(bricks)} bricks, weights {[round(w, 4) for w in result.weights]}"
        + (f", relative reconstruction error {result.rel_error:.4f}" if result.rel_error else "")
    )
