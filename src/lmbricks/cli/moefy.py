"""``lmbricks moefy``: cut a dense model's FFNs into experts (MoEfication), heal, evaluate, densify."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lmbricks.cli.common import FORCE_HELP, console, err_console, progress_bar, reads_checkpoints, user_errors
from lmbricks.data.registry import DEFAULT_DOMAINS


@user_errors
@reads_checkpoints
def moefy(
    model: str = typer.Argument(
        ..., help="Dense model (registry name or directory); with --densify a MoEfied dir."
    ),
    out: Path = typer.Argument(..., help="Output directory."),
    experts: int = typer.Option(32, "--experts", "-e", help="Experts per FFN (must divide its width)."),
    top_k: int = typer.Option(16, "--top-k", "-k", help="Experts used per token."),
    split: str = typer.Option("coactivation", "--split", help="kmeans, coactivation or random."),
    router: str = typer.Option(
        "linear", "--router", help="centroid (no training), linear (least squares) or mlp (trained)."
    ),
    dynamic_threshold: float | None = typer.Option(
        None, "--dynamic-threshold", help="Dynamic K: mass share."
    ),
    router_steps: int = typer.Option(400, "--router-steps", help="Adam steps per MLP router."),
    calib_chunks: int = typer.Option(
        8, "--calib-chunks", help="Calibration blocks per domain (train split)."
    ),
    calib_seq_len: int = typer.Option(512, "--calib-seq-len", help="Tokens per calibration block."),
    heal_minutes: float = typer.Option(
        0.0, "--heal-minutes", help="Healing budget in minutes (0: no healing)."
    ),
    heal_tokens: int | None = typer.Option(None, "--heal-tokens", help="Healing budget in tokens."),
    heal_routers_only: bool = typer.Option(
        False, "--heal-routers-only", help="Heal routers, freeze experts."
    ),
    evaluate: bool = typer.Option(False, "--eval", help="Evaluate and write a report beside OUT."),
    quick: bool = typer.Option(False, "--quick", help="Evaluation on 4 x 256 tokens per domain."),
    report: Path | None = typer.Option(None, "--report", help="Report directory (default OUT-report)."),
    densify_: bool = typer.Option(
        False, "--densify", help="Restore the dense model of a MoEfied MODEL into OUT."
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """MoEfy a dense model: experts from a neuron partition, a router per layer, a sparse runtime.

    Example: lmbricks moefy smollm2-135m-instruct runs/smol-moe -e 32 -k 16 --split coactivation --eval
    """
    import torch

    from lmbricks.checkpoint import check_output
    from lmbricks.errors import ConfigError
    from lmbricks.hub import load_hf_model, reference_paths, resolve_model
    from lmbricks.moefy import check_moefiable, densify, make_config, moefy_model, save_moefied
    from lmbricks.nn.load import read_config

    check_output(out, reference_paths(model), force)  # before any fetch or load
    if densify_:
        path = densify(resolve_model(model), out, force=force)
        console.print(f"dense model: {path}")
        return
    cfg = make_config(
        experts=experts,
        top_k=top_k,
        split=split,
        router=router,
        dynamic_threshold=dynamic_threshold,
        router_steps=router_steps,
        calib_chunks=calib_chunks,
        calib_seq_len=calib_seq_len,
    )
    report_dir = report or out.with_name(out.name + "-report")
    if evaluate:
        o, r = out.expanduser().absolute(), report_dir.expanduser().absolute()
        if o == r or o in r.parents or r in o.parents:
            raise ConfigError(f"--report {report_dir}: the report directory must lie apart from OUT {out}")
        check_output(report_dir, reference_paths(model), force)
    src = resolve_model(model)
    check_moefiable(read_config(src), cfg)  # before any work
    lm, tokenizer = load_hf_model(src)
    with err_console.status("moefying") as status:
        info = moefy_model(lm, tokenizer, cfg, on_step=lambda msg: status.update(msg))
    if info.oracle_share:
        share = sum(info.oracle_share) / len(info.oracle_share)
        console.print(
            f"calibration: top-{top_k} of {experts} experts hold {share:.1%} of the activation mass"
        )
    if heal_minutes > 0 or heal_tokens:
        from lmbricks.analysis.corpus import domain_chunks
        from lmbricks.moefy.heal import HealConfig, heal

        teacher, _ = load_hf_model(src)
        hcfg = HealConfig(
            max_tokens=heal_tokens, max_minutes=heal_minutes or None, train_experts=not heal_routers_only
        )
        chunks = domain_chunks(tokenizer, DEFAULT_DOMAINS, "train", 64, 256)
        blocks = torch.cat(list(chunks.values()))[torch.randperm(sum(c.shape[0] for c in chunks.values()))]
        with progress_bar() as bar:
            task = bar.add_task("healing", total=heal_tokens or None)

            def on_step(stats: object) -> None:
                from lmbricks.moefy.heal import HealStats

                assert isinstance(stats, HealStats)
                bar.update(task, completed=stats.tokens, description=f"healing KL {stats.kl[-1]:.3f}")

            hstats = heal(lm, teacher, blocks, hcfg, on_step=on_step)
        console.print(
            f"healed {hstats.steps} steps, {hstats.tokens} tokens, "
            f"KL {hstats.kl[0]:.3f} -> {hstats.kl[-1]:.3f}"
        )
        del teacher
    path = save_moefied(lm, out, cfg, info.permutations, source=src, tokenizer=tokenizer, force=force,
                        command=" ".join(["lmbricks", "moefy", *sys.argv[2:]]))  # fmt: skip
    console.print(f"MoEfied model: {path}")
    if evaluate:
        from lmbricks.analysis.corpus import FULL_BUDGET, QUICK_BUDGET, domain_chunks
        from lmbricks.moefy.evaluate import ppl_curve, time_ffn, time_model
        from lmbricks.moefy.reporting import write_moefy_report

        n, t = QUICK_BUDGET if quick else FULL_BUDGET
        evals = domain_chunks(tokenizer, DEFAULT_DOMAINS, "test", n, t)
        # K = E is the dense model (the baseline already measures it): the curve stops below it
        ks = sorted({k for k in (experts // 8, experts // 4, experts // 2, 3 * experts // 4, top_k) if 0 < k < experts})
        ks = ks or [experts]
        modes = ("oracle", "router")
        dyn = (0.7, 0.9) if router in ("linear", "mlp") else ()
        with err_console.status("evaluating") as status:
            result = ppl_curve(lm, evals, ks, modes, dyn, on_step=lambda msg: status.update(msg))
            status.update("timing")
            from lmbricks.moefy import moefied_layers

            dense, _ = load_hf_model(src)
            from lmbricks.analysis import find_ffns

            block = find_ffns(dense)[0]
            ffn = moefied_layers(lm)[0]
            timing_ks = sorted({max(1, experts // 4), max(1, experts // 2), experts})
            for tokens, name in ((1024, "ffn_prefill"), (1, "ffn_decode")):
                for key, value in time_ffn(block.module, ffn, block.hidden, timing_ks, tokens).items():
                    result.timings[f"{name}_{key}"] = value
            result.timings.update(time_model(dense, lm, timing_ks, rounds=3))
        settings = {"experts": experts, "top_k": top_k, "split": split, "router": router}
        path = write_moefy_report(
            result, report_dir, f"MoEfication of {model}", settings, force=force, inputs=[src, out]
        )
        for p in result.points:
            console.print(
                f"{p.mode:>14} K={p.top_k}  experts {p.fraction:5.1%}  ppl change {result.change(p):+.1%}"
            )
        console.print(f"report: {path}")
