"""``lmbricks trace``: which experts fire, per token, layer and domain; one HTML report and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lmbricks.cli.common import console, err_console, print_json, progress_bar, user_errors
from lmbricks.cli.options import domains_option, force_option, json_option, model_argument, reads_checkpoints


@user_errors
@reads_checkpoints
def trace(
    model: str = model_argument(help="Routed model: registry name, model directory or .gguf file."),
    domain: list[str] = domains_option("Stored domain to trace (repeatable)."),
    texts: list[str] = typer.Option(
        None,
        "--texts",
        help="DOMAIN=PATH: documents from a text file (blank-line paragraphs) or a folder of .txt files (repeatable).",
    ),
    layer: int | None = typer.Option(
        None, "--layer", help="Layer for the token colouring (default: middle routed layer)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/trace/<model>)."),
    split: str = typer.Option("test", "--split", help="Split of the stored domains."),
    docs: int = typer.Option(40, "--docs", help="At most this many documents per domain."),
    tokens: int = typer.Option(256, "--tokens", help="Tokens kept per document."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds of the topic classifier."),
    seed: int = typer.Option(0, "--seed", help="Fold shuffling seed."),
    batch: int = typer.Option(8, "--batch", help="Documents per forward pass."),
    adapter_router: Path | None = typer.Option(
        None, "--adapter-router", help="Trace adapter routing: a router JSON (lmbricks adapters) over MODEL."
    ),
    adapter_top_k: int = typer.Option(1, "--adapter-top-k", help="Bricks chosen per input (--adapter-router)."),
    force: bool = force_option(),
    as_json: bool = json_option("Print the numbers as JSON."),
) -> None:
    """Trace the routing of an MoE model over documents by domain: expert histograms and load,
    consecutive-token routing against random baselines, coloured tokens, and a linear SVM that
    guesses the domain from routing alone (beside majority and bag-of-words baselines).

    Example: lmbricks trace ./my-moe --domain code --domain prose --domain zh --layer 1
    """
    from lmbricks.config import validate
    from lmbricks.trace.inputs import parse_text_sources
    from lmbricks.trace.pipeline import TraceConfig, trace_model

    options: dict[str, Any] = {"domains": domain or [], "texts": parse_text_sources(texts or []), "split": split}
    options |= {"docs_per_domain": docs, "max_tokens": tokens, "layer": layer, "folds": folds, "seed": seed}
    options |= {"batch_size": batch, "adapter_router": adapter_router, "adapter_top_k": adapter_top_k}
    config = validate(TraceConfig, options, "lmbricks trace")
    with progress_bar(transient=True) as bar:
        task = bar.add_task("tracing", total=None)
        result = trace_model(
            model,
            config,
            out=out or Path("runs") / "trace" / (Path(model).name or model),
            force=force,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json(result.summary)
    else:
        _print_summary(result.summary)


def _print_summary(s: dict[str, Any]) -> None:
    """Per-layer consecutive-token and load numbers, the topic accuracies and the report's path."""
    table = Table(title=f"{s['model']}: {s['documents']} documents, {s['num_experts']} experts, top-{s['top_k']}")
    for col in ("layer", "same top-1", "top-k overlap", "load entropy / log E", "max / mean"):
        table.add_column(col, justify="right")
    for c, ld in zip(s["consecutive"], s["load"], strict=True):
        table.add_row(
            str(c["layer"]), f"{c['same_top1']:.3f}", f"{c['topk_overlap']:.3f}",
            f"{ld['normalised_entropy']:.3f}", f"{ld['max_over_mean']:.2f}",
        )  # fmt: skip
    rb = s["random_baselines"]
    table.caption = f"random: same top-1 {rb['same_top1']:.3f}, top-k overlap {rb['topk_overlap']:.3f}"
    console.print(table)
    if s["topic"]:
        for r in s["topic"][:3]:
            console.print(
                f"topic from routing, {r['features']}: {100 * r['accuracy']:.1f}% (± {100 * r['stderr']:.1f})"
            )
    else:
        err_console.print("topic classification skipped: needs two domains with two documents each")
    console.print(f"report: {s['report']}")
