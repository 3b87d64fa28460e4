"""``lmbricks analyze``: activation sparsity and capability neurons of a dense model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lmbricks.cli.common import FORCE_HELP, console, err_console, reads_checkpoints, user_errors
from lmbricks.data.registry import DEFAULT_DOMAINS

app = typer.Typer(
    help="Find emergent bricks in dense models: sparsity, capability neurons.", no_args_is_help=True
)

_DOMAINS = list(DEFAULT_DOMAINS)


def _budget(quick: bool, chunks: int | None, seq_len: int | None) -> tuple[int, int]:
    from lmbricks.analysis.corpus import FULL_BUDGET, QUICK_BUDGET

    base = QUICK_BUDGET if quick else FULL_BUDGET
    return chunks or base[0], seq_len or base[1]


@app.command()
@user_errors
@reads_checkpoints
def sparsity(
    model: str = typer.Argument(
        "smollm2-135m-instruct", help="Registry name, model directory or .gguf file."
    ),
    out: Path = typer.Option(Path("runs/sparsity"), "--out", "-o", help="Report directory."),
    domain: list[str] = typer.Option(
        None, "--domain", "-d", help="Domain (repeatable); default: five domains."
    ),
    sparsities: str = typer.Option("0,0.5,0.6,0.7,0.8,0.9,0.95", "--sparsities", help="Masked fractions."),
    cett: float = typer.Option(0.2, "--cett", help="CETT target (0 to skip)."),
    quick: bool = typer.Option(False, "--quick", help="4 x 256 tokens per domain instead of 4 x 1024."),
    chunks: int | None = typer.Option(None, "--chunks", help="Blocks per domain (overrides the budget)."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per block (overrides the budget)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Neuron metric distributions, the per-token masking curve and CETT sparsity, as an HTML report.

    Example: lmbricks analyze sparsity smollm2-135m-instruct --quick --out runs/sparsity
    """
    from lmbricks.analysis import SparsityConfig, analyze_sparsity, write_sparsity_report
    from lmbricks.checkpoint import check_output
    from lmbricks.errors import ConfigError
    from lmbricks.hub import load_hf_model, reference_paths

    check_output(out, reference_paths(model), force)  # before any fetch or load
    try:
        rhos = tuple(float(s) for s in sparsities.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--sparsities: not a comma-separated list of numbers: {sparsities!r}") from None
    n, t = _budget(quick, chunks, seq_len)
    cfg = SparsityConfig(
        domains=tuple(domain or _DOMAINS),
        sparsities=rhos,
        cett_target=cett or None,
        n_chunks=n,
        seq_len=t,
    )
    lm, tokenizer = load_hf_model(model)
    with err_console.status("analysing") as status:
        result = analyze_sparsity(lm, tokenizer, cfg, on_step=lambda msg: status.update(msg))
    path = write_sparsity_report(result, out, str(model), force=force, inputs=reference_paths(model))
    table = Table(title=f"{model}: mean perplexity change over {len(cfg.domains)} domains")
    table.add_column("metric")
    for rho in rhos:
        table.add_column(f"mask {rho:.0%}", justify="right")
    for metric in cfg.metrics:
        table.add_row(metric, *(f"{result.mean_change(metric, r):+.1%}" for r in rhos))
    console.print(table)
    if result.cett_ppl:
        change = sum(result.cett_ppl[d] / result.base_ppl[d] - 1 for d in cfg.domains) / len(cfg.domains)
        console.print(
            f"CETT {cfg.cett_target}: sparsity {result.cett_mean_sparsity:.1%}, perplexity {change:+.1%}"
        )
    console.print(f"report: {path}")


@app.command()
@user_errors
@reads_checkpoints
def neurons(
    model: str = typer.Argument(
        "smollm2-135m-instruct", help="Registry name, model directory or .gguf file."
    ),
    domains: list[str] = typer.Option(
        None, "--domains", "-d", help="Domain (repeatable); default: five domains."
    ),
    out: Path = typer.Option(Path("runs/neurons"), "--out", "-o", help="Report directory."),
    fraction: float = typer.Option(
        0.02, "--fraction", help="Share of each layer's neurons chosen per domain."
    ),
    statistic: str = typer.Option("corr", "--statistic", help="corr (point-biserial) or ratio (mean ratio)."),
    quick: bool = typer.Option(False, "--quick", help="4 x 256 tokens per domain instead of 4 x 1024."),
    chunks: int | None = typer.Option(None, "--chunks", help="Blocks per domain (overrides the budget)."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per block (overrides the budget)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Capability neurons per domain: prune them (and random controls), report the perplexity matrix.

    Example: lmbricks analyze neurons smollm2-135m-instruct -d code -d math -d zh -d en_prose --quick
    """
    from lmbricks.analysis import NeuronConfig, analyze_neurons, write_neuron_report
    from lmbricks.checkpoint import check_output
    from lmbricks.hub import load_hf_model, reference_paths

    check_output(out, reference_paths(model), force)  # before any fetch or load
    n, t = _budget(quick, chunks, seq_len)
    cfg = NeuronConfig(
        domains=tuple(domains or _DOMAINS), fraction=fraction, statistic=statistic, n_chunks=n, seq_len=t
    )
    lm, tokenizer = load_hf_model(model)
    with err_console.status("analysing") as status:
        result = analyze_neurons(lm, tokenizer, cfg, on_step=lambda msg: status.update(msg))
    path = write_neuron_report(result, out, str(model), force=force, inputs=reference_paths(model))
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
    console.print(f"report: {path}")
