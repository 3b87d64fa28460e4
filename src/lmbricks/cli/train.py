"""``lmbricks train CONFIG.yaml`` and ``lmbricks plan``: train small LMs and size them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lmbricks.cli.common import console, err_console, print_json, progress_bar, reads_checkpoints, user_errors
from lmbricks.cli.options import precision_option
from lmbricks.runtime import RequestedPrecision


@user_errors
@reads_checkpoints
def train(
    config: Path = typer.Argument(..., help="training YAML (see lmbricks.train.config)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", "-o", help="run directory [default: runs/<config stem>]"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in the run directory"),
    force: bool = typer.Option(False, "--force", help="start afresh, deleting the run's checkpoints"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    precision: RequestedPrecision | None = precision_option(None, "auto|bf16|fp32: replaces the config's precision"),
) -> None:
    """Train a small dense or MoE LM; checkpoints, log.jsonl and report.html go to the run directory.

    Runs under torchrun (gloo on CPU, NCCL on GPU) with the config's parallel: ddp (default), fsdp
    or {experts: R} (docs/distributed.md). precision auto (the default) is bf16
    autocast over fp32 weights where the hardware has native bf16; --precision fp32 reproduces fp32 runs.

    Example: lmbricks train tiny-moe.yaml -o runs/tiny-moe   (after a crash: add --resume)
    """
    import os

    from lmbricks.train import load_config
    from lmbricks.train import train as run

    cfg = load_config(config)
    if precision is not None:
        cfg = cfg.model_copy(update={"precision": precision})
    out = run_dir or Path("runs") / config.stem
    main = os.environ.get("RANK", "0") == "0"
    if quiet or not main:
        result = run(cfg, out, resume=resume, force=force, inputs=[config])
    else:
        with progress_bar() as bar:
            task = bar.add_task("training", total=cfg.steps)

            def on_step(rec: dict[str, Any]) -> None:
                bar.update(
                    task,
                    completed=rec["step"],
                    description=f"step {rec['step']} loss {rec['loss']:.3f} {rec['tokens_per_s']:.0f} tok/s",
                )

            result = run(cfg, out, resume=resume, force=force, on_step=on_step, inputs=[config])
    if main:
        last = result.records[-1] if result.records else {}
        console.print(
            f"done: {result.steps} steps, final loss {last.get('loss', float('nan')):.4f}; "
            f"checkpoint {result.final_checkpoint}; report {out / 'report.html'}",
            highlight=False,
        )


@user_errors
@reads_checkpoints
def plan(
    flops: float | None = typer.Option(None, "--flops", help="training FLOP budget, e.g. 1e18"),
    params: str | None = typer.Option(None, "--params", help="parameter count, e.g. 125M or 1.3e9"),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="a model: HF directory / registry name, or a YAML (training config or LMConfig fields)",
    ),
    ranks: int | None = typer.Option(None, "--ranks", help="size a training layout on this many processes"),
    expert_ranks: int | None = typer.Option(None, "--expert-ranks", help="expert parallel over groups of R ranks"),
    experts_per_rank: int | None = typer.Option(None, "--experts-per-rank", help="or: experts each rank holds"),
    fsdp: bool = typer.Option(False, "--fsdp", help="FSDP: parameters, gradients, optimizer sharded over ranks"),
    micro: int | None = typer.Option(None, "--micro-batch-size", help="sequences per forward per rank"),
    seq_len: int | None = typer.Option(None, "--seq-len", help="tokens per sequence [default: config's or 2048]"),
    memory: str | None = typer.Option(None, "--memory-per-rank", help="e.g. 80GB: say whether the layout fits"),
    as_json: bool = typer.Option(False, "--json", help="print JSON only"),
) -> None:
    """Chinchilla compute-optimal sizing (D = 20 N, C = 6 N D), total vs active parameters of a config,
    and with --ranks the memory per rank and bytes sent per step of a training layout.

    Example: lmbricks plan --config mixtral.yaml --ranks 16 --expert-ranks 8 --memory-per-rank 80GB
    """
    from lmbricks.train.layout_plan import layout_spec, parse_bytes
    from lmbricks.train.plan import model_config, parse_count
    from lmbricks.train.plan import plan as compute

    cfg = model_config(config) if config else None
    wants = ranks is not None or fsdp or expert_ranks is not None or experts_per_rank is not None
    spec = layout_spec(config, ranks or 1, expert_ranks, experts_per_rank, fsdp, micro, seq_len) if wants else None
    budget = parse_bytes(memory) if memory else None
    out = compute(cfg, flops=flops, params=parse_count(params) if params else None, layout=spec, memory_per_rank=budget)
    if as_json:
        print_json(out)
        return
    from rich.table import Table

    table = Table("quantity", "value")
    for section, values in out.items():
        for k, v in values.items():
            if isinstance(v, dict):
                v = ", ".join(f"{a}={b}" for a, b in v.items())
            elif isinstance(v, float | int):
                v = f"{v:.4g}" if abs(v) >= 1e4 or isinstance(v, float) else str(v)
            table.add_row(f"{section}.{k}", str(v))
    console.print(table)
    lay = out.get("layout")
    if lay is not None and lay["fits"] is not None:
        verdict = "fits" if lay["fits"] else "[red]does not fit[/red]"
        console.print(f"{lay['layout']} on {lay['ranks']}: {lay['total'] / 1e9:.2f} GB per rank of {memory}: {verdict}")


__all__ = ["err_console", "plan", "train"]
