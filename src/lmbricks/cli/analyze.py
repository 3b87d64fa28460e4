"""``lmbricks analyze``: activation sparsity and capability neurons of a dense model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lmbricks.cli.common import console, err_console, user_errors
from lmbricks.cli.options import (
    domains_option,
    force_option,
    model_argument,
    out_option,
    precision_option,
    reads_checkpoints,
)
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.errors import ConfigError
from lmbricks.runtime.precision import RequestedPrecision

app = typer.Typer(help="Find emergent bricks in dense models: sparsity, capability neurons.", no_args_is_help=True)

_DOMAINS_HELP = "Domain (repeatable); default: five domains."


def _quick() -> Any:
    return typer.Option(False, "--quick", help="4 x 256 tokens per domain instead of 4 x 1024.")


def _chunks() -> Any:
    return typer.Option(None, "--chunks", help="Blocks per domain (overrides the budget).")


def _seq_len() -> Any:
    return typer.Option(None, "--seq-len", help="Tokens per block (overrides the budget).")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--sparsities: not a comma-separated list of numbers: {text!r}") from None


@app.command()
@user_errors
@reads_checkpoints
def sparsity(
    model: str = model_argument("smollm2-135m-instruct"),
    out: Path = out_option(Path("runs/sparsity"), "Report directory."),
    domain: list[str] = domains_option(_DOMAINS_HELP),
    sparsities: str = typer.Option("0,0.5,0.6,0.7,0.8,0.9,0.95", "--sparsities", help="Masked fractions."),
    cett: float = typer.Option(0.2, "--cett", help="CETT target (0 to skip)."),
    quick: bool = _quick(),
    chunks: int | None = _chunks(),
    seq_len: int | None = _seq_len(),
    precision: RequestedPrecision = precision_option(),
    force: bool = force_option(),
) -> None:
    """Neuron metric distributions, the per-token masking curve and CETT sparsity, as an HTML report.

    Example: lmbricks analyze sparsity smollm2-135m-instruct --quick --out runs/sparsity
    """
    from lmbricks.analysis import SparsityConfig
    from lmbricks.analysis.corpus import budget
    from lmbricks.analysis.pipeline import run_sparsity

    rhos = _fractions(sparsities)
    n, t = budget(quick, chunks, seq_len)
    cfg = SparsityConfig(
        tuple(domain or DEFAULT_DOMAINS), rhos, cett_target=cett or None, n_chunks=n, seq_len=t, precision=precision
    )
    with err_console.status("analysing") as status:
        run = run_sparsity(model, cfg, out, force=force, on_step=status.update)
    result = run.result
    table = Table(title=f"{model}: mean perplexity change over {len(cfg.domains)} domains")
    table.add_column("metric")
    for rho in rhos:
        table.add_column(f"mask {rho:.0%}", justify="right")
    for metric in cfg.metrics:
        table.add_row(metric, *(f"{result.mean_change(metric, r):+.1%}" for r in rhos))
    console.print(table)
    if result.cett_ppl:
        change = sum(result.cett_ppl[d] / result.base_ppl[d] - 1 for d in cfg.domains) / len(cfg.domains)
        console.print(f"CETT {cfg.cett_target}: sparsity {result.cett_mean_sparsity:.1%}, perplexity {change:+.1%}")
    console.print(f"report: {run.report}")


@app.command()
@user_errors
@reads_checkpoints
def neurons(
    model: str = model_argument("smollm2-135m-instruct"),
    domains: list[str] = domains_option(_DOMAINS_HELP, "--domains"),
    out: Path = out_option(Path("runs/neurons"), "Report directory."),
    fraction: float = typer.Option(0.02, "--fraction", help="Share of each layer's neurons chosen per domain."),
    statistic: str = typer.Option("corr", "--statistic", help="corr (point-biserial) or ratio (mean ratio)."),
    quick: bool = _quick(),
    chunks: int | None = _chunks(),
    seq_len: int | None = _seq_len(),
    precision: RequestedPrecision = precision_option(),
    force: bool = force_option(),
) -> None:
    """Capability neurons per domain: prune them (and random controls), report the perplexity matrix.

    Example: lmbricks analyze neurons smollm2-135m-instruct -d code -d math -d zh -d en_prose --quick
    """
    from lmbricks.analysis import NeuronConfig
    from lmbricks.analysis.corpus import budget
    from lmbricks.analysis.pipeline import run_neurons

    n, t = budget(quick, chunks, seq_len)
    cfg = NeuronConfig(
        tuple(domains or DEFAULT_DOMAINS), fraction, statistic, n_chunks=n, seq_len=t, precision=precision
    )
    with err_console.status("analysing") as status:
        run = run_neurons(model, cfg, out, force=force, on_step=status.update)
    result = run.result
    table = Table(title=f"{model}: perplexity change, pruned domain (rows) x evaluated domain")
    table.add_column("pruned")
    for d in cfg.domains:
        table.add_column(d, justify="right")
    for p in cfg.domains:
        table.add_row(p, *(f"{result.change[p][e]:+.1%}" for e in cfg.domains))
    console.print(table)
    console.print(
        f"own domain {result.diagonal_mean:+.1%}, other domains {result.off_diagonal_mean:+.1%}, "
        f"random neurons {result.random_mean_change:+.1%}"
    )
    console.print(f"report: {run.report}")
