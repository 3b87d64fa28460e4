"""``lmbricks adapters route``: route inputs to bricks by the nearest domain centroid, or evaluate routing."""

from __future__ import annotations

from typing import Any

import typer

from lmbricks.cli.adapters_options import AS_JSON, MODEL
from lmbricks.cli.common import console, err_console, print_json, reads_checkpoints, user_errors

_EVAL_COLUMNS = ("domain", "docs", "accuracy", "ppl none", "ppl oracle", "ppl routed", "chosen")


def _print_evaluation(rows: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="routing on held-out texts")
    for col in _EVAL_COLUMNS:
        table.add_column(col)
    for dom, r in rows.items():
        scores = (f"{r['accuracy']:.2f}", f"{r['ppl_none']:.3f}", f"{r['ppl_oracle']:.3f}", f"{r['ppl_routed']:.3f}")
        table.add_row(dom, str(r["docs"]), *scores, str(r["chosen"]))
    console.print(table)


@user_errors
@reads_checkpoints
def route(
    prompts: list[str] = typer.Argument(None, help="prompts to route (omit with --eval)"),
    model: str = MODEL,
    bricks: str | None = typer.Option(None, help="comma-separated bricks (default: the model's catalogue)"),
    top_k: int = typer.Option(1, help="bricks per input (weighted by similarity)"),
    temperature: float = typer.Option(0.1, help="softmax temperature of the top-k weights"),
    layer: int = typer.Option(-1, help="hidden layer of the domain centroids"),
    max_new_tokens: int = typer.Option(0, help="generate this many tokens with the routed bricks"),
    evaluate: bool = typer.Option(False, "--eval", help="measure routing accuracy and ppl on held-out texts"),
    per_domain: int = typer.Option(8, help="--eval: held-out documents per domain"),
    refresh_centroids: bool = typer.Option(False, help="recompute the cached domain centroids"),
    as_json: bool = AS_JSON,
) -> None:
    """Route inputs to bricks by the nearest domain centroid of the base model's hidden states.

    Example: lmbricks adapters route "def add(a, b):" "你好" --max-new-tokens 20
    """
    from lmbricks.adapters.pipeline import RouteConfig, configure, route_bricks

    cfg = configure(
        RouteConfig,
        model=model,
        bricks=bricks.split(",") if bricks else None,
        top_k=top_k,
        temperature=temperature,
        layer=layer,
        max_new_tokens=max_new_tokens,
        per_domain=per_domain,
        refresh_centroids=refresh_centroids,
    )
    result = route_bricks(cfg, prompts or [], evaluate=evaluate, status=lambda m: err_console.print(m, highlight=False))
    if as_json:
        print_json(result.to_json())
        return
    if result.evaluation is not None:
        _print_evaluation(result.evaluation)
    for r in result.prompts:
        chosen = ", ".join(f"{n} ({w:.2f})" for n, w in r.bricks)
        console.print(f"[bold]{r.prompt!r}[/] -> {chosen}", highlight=False)
        if r.completion is not None:
            console.print(r.completion, highlight=False)
