"""``lmbricks tour``: the whole toolkit on the default model, as one HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.common import console, err_console, user_errors
from lmbricks.cli.options import out_option, precision_option
from lmbricks.runtime import RequestedPrecision
from lmbricks.tour.run import DEFAULT_MODEL, SECTION_NAMES


@user_errors
def tour(
    out: Path = out_option(Path("runs/tour"), "Directory for report.html and plots."),
    quick: bool = typer.Option(False, "--quick", help="Trim every budget (used by CI)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model to tour."),
    section: list[str] = typer.Option(
        None,
        "--section",
        "-s",
        help=f"Run only this section (repeatable; kept in report order): {', '.join(SECTION_NAMES)}.",
    ),
    precision: RequestedPrecision = precision_option(
        help="auto: the inference-only sections (bits per byte, prompting) run bf16 weights where the CPU "
        "has native bf16; fp32 reproduces the fp32 tour."
    ),
) -> None:
    """Show what lmbricks does on the default model and write runs/tour/report.html.

    A failing section does not stop the tour: the report shows its error and the command that
    reproduces it, and the command exits with code 1 after writing the report (2 for a bad argument).

    Example: lmbricks tour --quick --out runs/tour --section grow
    """
    from lmbricks.tour import TourFailed, run_tour

    try:
        path = run_tour(
            out,
            quick=quick,
            model_ref=model,
            log=lambda m: err_console.print(f"[dim]{m}[/]"),
            only=section or None,
            precision=precision,
        )
    except TourFailed as exc:
        console.print(f"report written to {exc.report}")
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"report written to {path}")
