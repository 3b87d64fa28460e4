"""HTML reports (with PNG plots and a results.json) for ``analyze sparsity`` and ``analyze neurons``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lmbricks.checkpoint import atomic_directory, write_provenance

if TYPE_CHECKING:
    from lmbricks.analysis.neurons import NeuronResult
    from lmbricks.analysis.sparsity import SparsityResult
    from lmbricks.report import Report


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def write_sparsity_report(
    result: SparsityResult, out: Path, model_name: str, force: bool = False, inputs: Sequence[str | Path] = ()
) -> Path:
    """Write ``report.html``, ``results.json``, the plots and ``lmbricks.json`` of a sparsity analysis.

    Args:
        result: the analysis.
        out: the report directory (refused if it exists unless ``force`` and lmbricks wrote it).
        model_name: shown in the title.
        force: replace an earlier report.
        inputs: the model analysed (``out`` must keep apart from it).

    Returns:
        The path of report.html.
    """
    from lmbricks.report import Report

    cfg = result.config
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        write_provenance(tmp, command="lmbricks analyze sparsity", recipe={"report": model_name}, inputs={})
        (tmp / "results.json").write_text(json.dumps(result.to_dict(), indent=2))
        report = Report(
            f"Activation sparsity of {model_name}",
            f"{cfg.n_chunks} x {cfg.seq_len} tokens per domain ({', '.join(cfg.domains)})",
        )
        rhos = list(cfg.sparsities)
        report.summary(
            [[m] + [_pct(result.mean_change(m, r)) for r in rhos] for m in cfg.metrics],
            ["metric"] + [f"mask {r:.0%}" for r in rhos],
        )
        _masking_section(report, result, tmp)
        _distribution_section(report, result, tmp)
        if result.cett_thresholds:
            _cett_section(report, result, tmp)
        report.save(tmp / "report.html")
    return Path(out) / "report.html"


def _masking_section(report: Report, result: SparsityResult, tmp: Path) -> None:
    """The masking curve (mean over domains, then by domain) and a table per metric."""
    from lmbricks.report import line_chart

    cfg, rhos = result.config, list(result.config.sparsities)
    xs = [r * 100 for r in rhos]
    curve_png = line_chart(
        tmp / "masking_curve.png",
        {m: (xs, [1 + result.mean_change(m, r) for r in rhos]) for m in cfg.metrics},
        "Per-token masking: mean perplexity ratio over domains",
        "masked neurons per token (%)",
        "perplexity ratio (masked / unmasked, log scale)",
        logy=True,
    )
    report.section(
        "Masking curve",
        "Each FFN keeps only the top (1 - rho) neurons of every token by the metric; the others are "
        "zeroed before the down projection. 'abs' ranks by |a_i|, 'norm' by |a_i| * ||W_down[:, i]||.",
    )
    report.figure(curve_png, "Mean over the domains of the perplexity ratio (1 = unchanged)")
    for metric in cfg.metrics:
        rows = [
            [d, result.base_ppl[d]] + [_pct(result.curve[metric][f"{r:g}"][d] / result.base_ppl[d] - 1) for r in rhos]
            for d in cfg.domains
        ]
        report.table(rows, ["domain", "ppl"] + [f"{r:.0%}" for r in rhos], caption=f"metric {metric}")
    shown = result.curve["norm" if "norm" in cfg.metrics else cfg.metrics[0]]
    domain_png = line_chart(
        tmp / "masking_by_domain.png",
        {d: (xs, [shown[f"{r:g}"][d] / result.base_ppl[d] for r in rhos]) for d in cfg.domains},
        "Perplexity ratio by domain (masked / unmasked)",
        "masked neurons per token (%)",
        "perplexity ratio",
        logy=True,
    )
    report.figure(domain_png, "Per-domain perplexity ratio")


def _distribution_section(report: Report, result: SparsityResult, tmp: Path) -> None:
    """Histograms of both metrics at the first, middle and last layers; the top neurons' share of the mass."""
    from lmbricks.analysis.sparsity import HIST_BINS, HIST_RANGE, TOP_SHARES
    from lmbricks.report import line_chart

    report.section("Metric distributions (the long tail)")
    n_layers = len(result.histograms["norm"])
    picks = sorted({0, n_layers // 2, n_layers - 1})
    lo, hi = HIST_RANGE
    centres = [lo + (hi - lo) * (i + 0.5) / HIST_BINS for i in range(HIST_BINS)]
    for metric in ("abs", "norm"):
        series = {}
        for layer in picks:
            counts = result.histograms[metric][layer]
            total = sum(counts) or 1.0
            series[f"layer {layer}"] = (centres, [c / total for c in counts])
        png = line_chart(
            tmp / f"distribution_{metric}.png",
            series,
            f"Distribution of log10 {metric} metric",
            f"log10 {metric}",
            "fraction of (token, neuron) pairs",
        )
        report.figure(png, f"Histogram of the {metric} metric over all evaluation tokens")
    layers = list(range(n_layers))
    share_png = line_chart(
        tmp / "top_share.png",
        {f"top {f:.0%}": (layers, [row[j] for row in result.top_share["norm"]]) for j, f in enumerate(TOP_SHARES)},
        "Share of the per-token norm-metric mass held by the top neurons",
        "layer",
        "share of mass",
    )
    report.figure(share_png, "Mean over tokens; 1.0 would mean the rest contribute nothing")


def _cett_section(report: Report, result: SparsityResult, tmp: Path) -> None:
    """Perplexity with the CETT thresholds per domain, and the sparsity they give per layer."""
    from lmbricks.report import line_chart

    cfg = result.config
    report.section(
        f"CETT {cfg.cett_target}",
        "Per layer, the norm-metric threshold whose mean tail-to-output norm ratio on calibration "
        "blocks (train split) equals the target; applied to the evaluation blocks.",
    )
    base, cett = result.base_ppl, result.cett_ppl
    report.table(
        [[d, base[d], cett[d], _pct(cett[d] / base[d] - 1)] for d in cfg.domains],
        ["domain", "ppl", "ppl with CETT", "change"],
        caption=f"mean sparsity {result.cett_mean_sparsity:.1%}",
    )
    png = line_chart(
        tmp / "cett_sparsity.png",
        {"sparsity": (list(range(len(result.cett_sparsity))), result.cett_sparsity)},
        f"Sparsity per layer at CETT {cfg.cett_target}",
        "layer",
        "fraction of neurons below threshold",
    )
    report.figure(png, "Resulting sparsity per layer")


def write_neuron_report(
    result: NeuronResult, out: Path, model_name: str, force: bool = False, inputs: Sequence[str | Path] = ()
) -> Path:
    """Write ``report.html``, ``results.json``, the plots and ``lmbricks.json`` of a capability-neuron analysis.

    Args and return value as for :func:`write_sparsity_report`.
    """
    from lmbricks.report import Report, heatmap

    cfg = result.config
    domains = list(cfg.domains)
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        write_provenance(tmp, command="lmbricks analyze neurons", recipe={"report": model_name}, inputs={})
        (tmp / "results.json").write_text(json.dumps(result.to_dict(), indent=2))
        report = Report(
            f"Capability neurons of {model_name}",
            f"top {cfg.fraction:.1%} of neurons per layer and domain by {cfg.statistic}; "
            f"{cfg.n_chunks} x {cfg.seq_len} tokens per domain",
        )
        diag = [result.change[d][d] for d in domains]
        off = [result.change[p][e] for p in domains for e in domains if p != e]
        report.summary(
            [
                ["own domain (diagonal)", _pct(sum(diag) / len(diag))],
                ["other domains", _pct(sum(off) / max(len(off), 1))],
                ["random neurons (all domains)", _pct(result.random_mean_change)],
            ],
            ["pruned neurons, evaluated on", "mean perplexity change"],
        )
        png = heatmap(
            tmp / "prune_matrix.png",
            [[100 * result.change[p][e] for e in domains] for p in domains],
            [f"pruned {d}" for d in domains],
            domains,
            "Perplexity change (%) after pruning a domain's neurons",
            fmt="{:.0f}",
        )
        report.section(
            "Pruning matrix",
            "Row: the domain whose specific neurons are zeroed; column: the domain evaluated. "
            "A dominant diagonal means the neurons serve that capability.",
        )
        report.figure(png, "Relative perplexity change, pruned domain x evaluated domain")
        report.table(
            [[f"pruned {p}"] + [_pct(result.change[p][e]) for e in domains] for p in domains]
            + [[f"random ({p})"] + [_pct(result.random_change[p][e]) for e in domains] for p in domains],
            ["neurons"] + domains,
        )
        png = heatmap(
            tmp / "jaccard.png",
            [[result.jaccard[a][b] for b in domains] for a in domains],
            domains,
            domains,
            "Jaccard overlap of the domains' neuron sets",
        )
        report.section("Overlap")
        report.figure(png, "Jaccard index of the selected neuron sets")
        report.save(tmp / "report.html")
    return Path(out) / "report.html"
