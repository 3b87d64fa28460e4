"""``lmbricks sparsify``: activation sparsity by training (ReLU-fication) and training-free (GRIFFIN, CATS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lmbricks.cli.common import FORCE_HELP, console, progress_bar, reads_checkpoints, training_progress, user_errors
from lmbricks.cli.options import precision_option
from lmbricks.runtime.precision import RequestedPrecision

app = typer.Typer(
    help="Activation sparsity: ReLU-fication by training; training-free GRIFFIN and CATS, measured.",
    no_args_is_help=True,
)


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
    data_tokens: int = typer.Option(500_000, "--data-tokens", help="Training tokens taken per domain."),
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
        data_tokens=data_tokens,
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


@app.command()
@user_errors
@reads_checkpoints
def evaluate(
    model: str = typer.Argument(..., help="Model (registry name or HF directory) loading as lmbricks' LM."),
    out: Path = typer.Argument(..., help="Output directory (results.json)."),
    method: str = typer.Option(
        "griffin", "--method", help="griffin | cats (gate threshold) | cmoe (carved MoE) | teal (input thresholds)."
    ),
    keep: list[float] | None = typer.Option(None, "--keep", help="Fraction of FFN neurons kept (repeat; 0.5 0.25)."),
    domains: str = typer.Option("en_prose,code,math,zh,dialogue", "--domains", help="Comma-separated corpora."),
    text_file: list[Path] | None = typer.Option(None, "--text-file", help="Read the windows from this file instead."),
    sequences: int = typer.Option(4, "--sequences", help="Windows (prompt + continuation) per domain."),
    prompt_tokens: int = typer.Option(512, "--prompt-tokens", help="Prompt tokens per window."),
    continuation_tokens: int = typer.Option(128, "--continuation-tokens", help="Held-out tokens scored after it."),
    calibration_tokens: int = typer.Option(2048, "--calibration-tokens", help="CATS, CMoE: train tokens per domain."),
    experts: int = typer.Option(32, "--experts", help="CMoE: experts per FFN."),
    shared_experts: int = typer.Option(4, "--shared-experts", help="CMoE: shared (always on) experts."),
    oracle: bool = typer.Option(False, "--oracle", help="CMoE: route by true expert mass (a bound)."),
    router: str = typer.Option("analytic", "--router", help="CMoE: analytic | linear (moefy's ridge fit)."),
    allocation: str = typer.Option("uniform", "--allocation", help="TEAL: uniform | greedy (per-block search)."),
    decode_tokens: int = typer.Option(32, "--decode-tokens", help="Greedy tokens per arm and round timed (0: none)."),
    rounds: int = typer.Option(3, "--rounds", help="Timing rounds (arm order rotates)."),
    precision: RequestedPrecision = precision_option(),
    threads: int = typer.Option(1, "--threads", help="torch intra-op threads while measuring."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Training-free sparsity vs dense: GRIFFIN (2404.01365), CATS (2404.08763), CMoE (2502.04416), TEAL (2408.14690).

    Each window is a prompt and its held-out continuation; prints the continuation's perplexity
    change per domain and the decoding speed (CPU time; not for CMoE, applied as a mask); writes
    OUT/results.json. See docs/emergent-bricks.md.

    Example: lmbricks sparsify evaluate smollm2-135m-instruct runs/griffin --method griffin --keep 0.5 --keep 0.25
    """
    from lmbricks.config import validate
    from lmbricks.sparsify.evaluate import SparsifyEvalConfig, run_sparsify_eval

    fields: dict[str, Any] = dict(
        model=model, out=out, method=method, keep=keep, domains=[d for d in domains.split(",") if d],
        text_files=text_file, sequences=sequences, prompt_tokens=prompt_tokens, calibration_tokens=calibration_tokens,
        continuation_tokens=continuation_tokens, decode_tokens=decode_tokens, rounds=rounds, precision=precision,
        threads=threads, force=force, experts=experts, shared_experts=shared_experts, oracle=oracle,
        router=router, allocation=allocation,
    )  # fmt: skip
    cfg = validate(SparsifyEvalConfig, {k: v for k, v in fields.items() if v is not None}, "sparsify evaluate options")
    with progress_bar(transient=True) as bar:
        task = bar.add_task(cfg.method, total=None)
        result = run_sparsify_eval(cfg, lambda done, total: bar.update(task, completed=done, total=total))
    for arm, change in result.ppl_change.items():
        per = "  ".join(f"{d} {v:+.1%}" for d, v in change.items() if d != "mean")
        console.print(f"{arm}: perplexity {change['mean']:+.1%} (mean)  {per}", highlight=False)
    for arm, tok_s in result.decode_tok_s.items():
        ffn = result.ffn_decode_ms[arm]
        console.print(f"{arm}: decode {tok_s:.1f} tokens/s, FFN {ffn:.3f} ms/token (CPU time)", highlight=False)
    console.print(f"output: {cfg.out}")
