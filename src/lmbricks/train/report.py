"""report.html of a run: loss curves, auxiliary losses, throughput and per-layer expert load."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lmbricks.report import Report
from lmbricks.train.stats import read_log


def write_report(run_dir: Path) -> Path:
    """Build ``run_dir/report.html`` from the log (self-contained: PNGs are inlined).

    Returns:
        The report path.
    """
    from lmbricks.report import line_chart

    run_dir = Path(run_dir)
    recs = read_log(run_dir / "log.jsonl")
    rep = Report(f"Training run {run_dir.name}", subtitle=str(run_dir))
    if not recs:
        rep.section("Log", "log.jsonl is empty: no step was logged.")
        return rep.save(run_dir / "report.html")
    steps = [r["step"] for r in recs]
    last = recs[-1]
    tps = [r["tokens_per_s"] for r in recs]
    rep.summary(
        [
            ["steps", last["step"]],
            ["tokens", last["tokens"]],
            ["final loss", f"{last['loss']:.4f}"],
            ["min loss", f"{min(r['loss'] for r in recs):.4f}"],
            ["median tokens/s", f"{sorted(tps)[len(tps) // 2]:.0f}"],
        ],
        ["quantity", "value"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        rep.section("Loss", "Next-token cross-entropy (nats) per optimizer step, averaged over the global batch.")
        rep.figure(
            line_chart(t / "loss.png", {"loss": (steps, [r["loss"] for r in recs])}, "Training loss", "step", "loss"),
            "training loss",
        )
        rep.figure(
            line_chart(t / "lr.png", {"lr": (steps, [r["lr"] for r in recs])}, "Learning rate", "step", "lr"),
            "learning-rate schedule",
        )
        if "aux" in last:
            _moe_sections(rep, recs, t)
        if (run_dir / "sft_data.json").exists():
            from lmbricks.sft.report import add_sft_sections

            add_sft_sections(rep, run_dir, t)
        rep.section("Throughput")
        rep.figure(
            line_chart(t / "tps.png", {"tokens/s": (steps, tps)}, "Training throughput", "step", "tokens/s"),
            "tokens per second",
        )
        return rep.save(run_dir / "report.html")


def _moe_sections(rep: Report, recs: list[dict[str, Any]], t: Path) -> None:
    """Auxiliary losses, expert load, load imbalance and capacity drops of an MoE run's log."""
    from lmbricks.report import heatmap, line_chart

    steps = [r["step"] for r in recs]
    last = recs[-1]
    names = list(last["aux"])
    rep.section("Auxiliary losses", "Unweighted, averaged over MoE layers (switch = 1 when balanced).")
    rep.figure(
        line_chart(
            t / "aux.png",
            {n: (steps, [r["aux"][n] for r in recs]) for n in names},
            "Auxiliary losses",
            "step",
            "value",
        ),
        "auxiliary losses",
    )
    layers = len(last["expert_load"])
    rep.section(
        "Expert load",
        "Share of routed (token, expert) pairs per expert and MoE layer, averaged over the last "
        "quarter of the run (uniform = 1/E), and max/mean load per layer over time.",
    )
    tail = recs[-max(1, len(recs) // 4) :]
    experts = len(last["expert_load"][0])
    mean_load = [[sum(r["expert_load"][i][e] for r in tail) / len(tail) for e in range(experts)] for i in range(layers)]
    rep.figure(
        heatmap(
            t / "load.png",
            mean_load,
            [f"MoE layer {i}" for i in range(layers)],
            [f"e{e}" for e in range(experts)],
            "Expert load (share of pairs)",
        ),
        "per-layer expert load",
    )
    rep.figure(
        line_chart(
            t / "imbalance.png",
            {f"layer {i}": (steps, [r["expert_load_max_over_mean"][i] for r in recs]) for i in range(layers)},
            "Max / mean expert load",
            "step",
            "ratio",
        ),
        "load imbalance per layer",
    )
    rep.figure(
        line_chart(
            t / "dropped.png",
            {"dropped": (steps, [r["dropped_fraction"] for r in recs])},
            "Dropped-token fraction",
            "step",
            "fraction",
        ),
        "capacity drops",
    )
