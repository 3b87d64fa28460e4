"""Markdown tables of acceleration plug-in measurements, as docs/plugins.md quotes them (a test compares them)."""

from __future__ import annotations

from typing import Any


def bpb_table(result: dict[str, Any]) -> list[str]:
    """The lines of the table of ``plugins accelerate eval --json`` rows: saving and bits per byte by domain."""
    lines = [
        "| brick | r | steps | prefix weight | prefill FLOPs saved | prefill CPU s plain -> plug-in | CPU saved "
        "| domain | bpb plain | bpb plug-in | bpb truncated | bpb all positions, plain -> plug-in |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for i, domain in enumerate([*row["bpb"], "mean"]):
            b = row["bpb_mean"] if domain == "mean" else row["bpb"][domain]
            plug, cut = f"{b['plugin']:.3f}", f"{b['truncated']:.3f}"
            if domain == "mean":
                plug += f" ({b['plugin'] / b['plain'] - 1:+.1%})"
                cut += f" ({b['truncated'] / b['plain'] - 1:+.1%})"
            cpu = row["prefill_cpu_s"]
            head = (
                f"| {row['brick']} | {row['ratio']} | {row['steps']} | {row['prefix_weight']} "
                f"| {row['prefill_flops_saved']:.0%} | {cpu['plain']:.2f} -> {cpu['plugin']:.2f} "
                f"| {row['prefill_cpu_saved']:.0%} |"
                if i == 0
                else "| | | | | | | |"
            )
            lines.append(f"{head} {domain} | {b['plain']:.3f} | {plug} | {cut} | {b['plain_all']:.3f} -> "
                         f"{b['plugin_all']:.3f} |")  # fmt: skip
    return lines


def curve_table(curves: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The lines of the table of tail bits per byte against distillation steps, one block of rows per run."""
    lines = [
        "| run | step | KL (weighted) | en_prose bpb plain -> plug-in | code bpb plain -> plug-in | mean change |",
        "|---|---|---|---|---|---|",
    ]
    for name, points in curves.items():
        for i, p in enumerate(points):
            loss = "-" if p["loss"] is None else f"{p['loss']:.3f}"
            prose, code = p["en_prose"], p["code"]
            plain = (prose["plain"] + code["plain"]) / 2
            change = (prose["plugin"] + code["plugin"]) / 2 / plain - 1
            cells = [name if i == 0 else "", str(p["step"]), loss, f"{prose['plain']:.3f} -> {prose['plugin']:.3f}",
                     f"{code['plain']:.3f} -> {code['plugin']:.3f}", f"{change:+.1%}"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def fewshot_table(result: dict[str, Any]) -> list[str]:
    """The lines of the table of ``plugins accelerate fewshot --json``: accuracy and paired counts per condition."""
    lines = [
        "| shots | condition | right | accuracy | Wilson 95% | cost (plain-model tokens) | gained / lost vs plain "
        "| sign test p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for i, c in enumerate(run["conditions"]):
            lo, hi = c["ci95"]
            lines.append(f"| {run['shots'] if i == 0 else ''} | {c['condition']} | {c['correct']}/{c['n']} "
                         f"| {c['accuracy']:.0%} | {lo:.0%} - {hi:.0%} | {c['mean_cost_tokens']:.0f} "
                         f"| {c['gained_vs_plain']} / {c['lost_vs_plain']} | {c['p_sign']:.2f} |")  # fmt: skip
    return lines
