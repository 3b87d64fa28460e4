"""``lmbricks moefy``: cut a dense model's FFNs into experts (MoEfication), heal, evaluate, densify."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lmbricks.cli.common import FORCE_HELP, console, err_console, reads_checkpoints, user_errors
from lmbricks.cli.options import precision_option
from lmbricks.runtime.precision import RequestedPrecision

if TYPE_CHECKING:
    from lmbricks.moefy.pipeline import MoefyOutcome, MoefyRun


@user_errors
@reads_checkpoints
def moefy(
    model: str = typer.Argument(..., help="Dense model (registry name or directory); with --densify a MoEfied dir."),
    out: Path = typer.Argument(..., help="Output directory."),
    experts: int = typer.Option(32, "--experts", "-e", help="Experts per FFN (must divide its width)."),
    top_k: int = typer.Option(16, "--top-k", "-k", help="Routed experts used per token."),
    shared_experts: int = typer.Option(0, "--shared-experts", help="Always-on experts of the most activated neurons."),
    split: str = typer.Option("coactivation", "--split", help="kmeans, coactivation or random."),
    router: str = typer.Option(
        "linear", "--router", help="centroid (no training), linear (least squares) or mlp (trained)."
    ),
    dynamic_threshold: float | None = typer.Option(None, "--dynamic-threshold", help="Dynamic K: mass share."),
    router_steps: int = typer.Option(400, "--router-steps", help="Adam steps per MLP router."),
    calib_chunks: int = typer.Option(8, "--calib-chunks", help="Calibration blocks per domain (train split)."),
    calib_seq_len: int = typer.Option(512, "--calib-seq-len", help="Tokens per calibration block."),
    heal_minutes: float = typer.Option(0.0, "--heal-minutes", help="Healing budget in minutes (0: no healing)."),
    heal_tokens: int | None = typer.Option(None, "--heal-tokens", help="Healing budget in tokens."),
    heal_routers_only: bool = typer.Option(False, "--heal-routers-only", help="Heal routers, freeze experts."),
    evaluate: bool = typer.Option(False, "--eval", help="Evaluate and write a report beside OUT."),
    quick: bool = typer.Option(False, "--quick", help="Evaluation on 4 x 256 tokens per domain."),
    report: Path | None = typer.Option(None, "--report", help="Report directory (default OUT-report)."),
    densify_: bool = typer.Option(False, "--densify", help="Restore the dense model of a MoEfied MODEL into OUT."),
    precision: RequestedPrecision = precision_option(help="Healing's precision (auto: bf16 autocast on bf16 CPUs)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """MoEfy a dense model: experts from a neuron partition, a router per layer, a sparse runtime.

    Example: lmbricks moefy smollm2-135m-instruct runs/smol-moe -e 32 -k 16 --split coactivation --eval
    """
    from lmbricks.moefy.pipeline import MoefyRun, run_moefy

    settings = dict(experts=experts, top_k=top_k, shared_experts=shared_experts, split=split, router=router,
                    dynamic_threshold=dynamic_threshold, router_steps=router_steps, calib_chunks=calib_chunks,
                    calib_seq_len=calib_seq_len)  # fmt: skip
    run = MoefyRun.of(
        model=model,
        out=out,
        moefy=settings,
        heal_minutes=heal_minutes,
        heal_tokens=heal_tokens,
        heal_routers_only=heal_routers_only,
        evaluate=evaluate,
        quick=quick,
        report=report,
        densify=densify_,
        precision=precision,
        force=force,
        command=" ".join(["lmbricks", "moefy", *sys.argv[2:]]),
    )
    with err_console.status("moefying") as status:
        outcome = run_moefy(
            run,
            on_step=status.update,
            on_heal=lambda s: status.update(f"healing: {s.tokens} tokens, KL {s.kl[-1]:.3f}"),
        )
    _print_outcome(run, outcome)


def _print_outcome(run: MoefyRun, outcome: MoefyOutcome) -> None:
    if run.densify:
        console.print(f"dense model: {outcome.path}")
        return
    if outcome.oracle_share is not None:
        k, e = run.moefy.top_k, run.moefy.experts
        console.print(f"calibration: top-{k} of {e} experts hold {outcome.oracle_share:.1%} of the activation mass")
    if outcome.healed is not None and outcome.healed.kl:
        h = outcome.healed
        console.print(f"healed {h.steps} steps, {h.tokens} tokens, KL {h.kl[0]:.3f} -> {h.kl[-1]:.3f}")
    console.print(f"MoEfied model: {outcome.path}")
    if outcome.evaluation is not None:
        result = outcome.evaluation
        for p in result.points:
            console.print(f"{p.mode:>14} K={p.top_k}  experts {p.fraction:5.1%}  ppl change {result.change(p):+.1%}")
        console.print(f"report: {outcome.report}")
