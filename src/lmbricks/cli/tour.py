"""``lmbricks tour``: the whole toolkit on the default model, as one HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.common import console, err_console, user_errors


@user_errors
def tour(
    out: Path = typer.Option(Path("runs/tour"), "--out", "-o", help="Directory for report.html and plots."),
    quick: bool = typer.Option(False, "--quick", help="Trim every budget (used by CI)."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="Model to tour."),
) -> None:
    """Show what lmbricks does on the default model and write runs/tour/report.html.

    Example: lmbricks tour --quick --out runs/tour
    """
    from lmbricks.tour import run_tour

    path = run_tour(out, quick=quick, model_ref=model, log=lambda m: err_console.print(f"[dim]{m}[/]"))
    console.print(f"report written to {path}")
