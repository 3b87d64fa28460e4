"""``lmbricks sparsify``: activation sparsity by training (ReLU-fication, ProSparse)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lmbricks.cli.common import FORCE_HELP, console, reads_checkpoints, training_progress, user_errors

app = typer.Typer(help="Make dense models activation-sparse by training (ReLU-fication).", no_args_is_help=True)


@app.command()
@user_errors
@reads_checkpoints
def relufy(
    model: str = typer.Argument(..., help="Dense SwiGLU model (registry name or HF directory); never modified."),
    out: Path = typer.Argument(..., help="Output HF directory (hidden_act relu; FATReLU's T in its lmbricks section)."),
    tokens: int = typer.Option(200_000, "--tokens", help="Training budget in tokens (0: swap and threshold only)."),
    minutes: float | None = typer.Option(None, "--minutes", help="Stop training after this many minutes."),
    domains: str = typer.Option("en_prose,code,math,zh,dialogue", "--domains", help="Comma-separated corpora."),
    text_file: list[Path] | None = typer.Option(None, "--text-file", help="Train on this UTF-8 file instead."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per optimizer step."),
    seq_len: int = typer.Option(256, "--seq-len", help="Tokens per training sequence."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate."),
    l1_factor: float = typer.Option(1e-2, "--l1-factor", help="Final factor of the L1 penalty on relu(gate)."),
    l1_steps: int = typer.Option(50, "--l1-steps", help="Steps over which the L1 factor rises (sine)."),
    threshold: float = typer.Option(0.0, "--threshold", help="FATReLU threshold T applied at the end."),
    target_sparsity: float | None = typer.Option(None, "--target-sparsity", help="Choose T for this zero fraction."),
    eval_every: int = typer.Option(25, "--eval-every", help="Steps between recovery-curve points."),
    eval_tokens: int = typer.Option(2048, "--eval-tokens", help="Tokens per domain in each curve point."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Training run directory (default .OUT.relufy-run)."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    resume: bool = typer.Option(False, "--resume", help="Continue the training in the run directory."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """ReLU-fy a dense model: ReGLU swap, training with a rising L1 penalty, FATReLU threshold.

    Example: lmbricks sparsify relufy smollm2-135m-instruct runs/smol-relu --tokens 500000 --target-sparsity 0.8
    """
    from lmbricks.config import validate
    from lmbricks.sparsify import RelufyConfig
    from lmbricks.sparsify import relufy as run_relufy

    fields: dict[str, Any] = dict(
        model=model,
        out=out,
        tokens=tokens,
        minutes=minutes,
        batch_size=batch_size,
        domains=[d for d in domains.split(",") if d],
        text_files=text_file,
        seq_len=seq_len,
        lr=lr,
        l1_factor=l1_factor,
        l1_increase_steps=l1_steps,
        threshold=threshold,
        target_sparsity=target_sparsity,
        eval_every=eval_every,
        eval_tokens=eval_tokens,
        run_dir=run_dir,
        threads=threads,
        resume=resume,
        force=force,
    )
    cfg = validate(RelufyConfig, {k: v for k, v in fields.items() if v is not None}, "sparsify relufy options")
    with training_progress("relufy", cfg.steps) as (on_step, _status):
        result = run_relufy(cfg, on_step=lambda r: on_step(r["step"], r["loss"]))
    for point in result.curve:
        console.print(
            f"step {point['step']:>5}  tokens {point['tokens']:>8}  bpb {point['mean_bpb']:.3f}  "
            f"zeros {point['mean_zero_fraction']:.1%}"
        )
    f = result.final
    console.print(f"threshold {result.threshold:.4g}  bpb {f['mean_bpb']:.3f}  zeros {f['mean_zero_fraction']:.1%}")
    console.print(f"output: {result.out}")
