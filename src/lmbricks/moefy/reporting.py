"""The HTML report of a MoEfied model's evaluation: perplexity curve and speed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmbricks.checkpoint import atomic_directory, write_provenance
from lmbricks.moefy.evaluate import MoefyEval


def write_moefy_report(
    result: MoefyEval,
    out: Path,
    title: str,
    settings: dict[str, Any],
    force: bool = False,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write ``report.html``, ``results.json``, plots and ``lmbricks.json`` into the directory ``out``.

    Args:
        result: the evaluation.
        out: the report directory (refused if it exists unless ``force`` and lmbricks wrote it).
        title: the report's title.
        settings: the MoEfication settings, shown and recorded.
        force: replace an earlier report.
        inputs: the models evaluated (``out`` must keep apart from them).

    Returns:
        The path of report.html.
    """
    from lmbricks.report import Report, line_chart

    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        write_provenance(tmp, command="lmbricks moefy --eval", recipe={"report": settings}, inputs={})
        (tmp / "results.json").write_text(json.dumps({"settings": settings, **result.to_dict()}, indent=2))
        report = Report(title, ", ".join(f"{k}={v}" for k, v in settings.items()))
        png = line_chart(
            tmp / "ppl_vs_experts.png",
            _curves(result),
            "Mean perplexity change versus experts used",
            "experts used per token (%)",
            "perplexity change (%)",
            logy=False,
        )
        rows = [
            [p.mode, p.top_k if p.top_k is not None else "-", f"{p.fraction:.1%}", f"{result.change(p):+.1%}"]
            for p in result.points
        ]
        report.summary(rows, ["selection", "K", "experts used", "mean perplexity change"])
        report.section(
            "Perplexity versus experts used",
            "oracle: the K experts with the most true activation mass (needs the dense FFN: a bound); "
            "router: the learned or centroid router; dynamic: the fewest experts whose predicted mass "
            "share reaches the threshold. Selected experts are summed with weight 1.",
        )
        report.figure(png, "Relative perplexity change averaged over the domains")
        domains = list(result.dense_ppl)
        report.table(_per_domain_rows(result), ["selection", "K"] + domains, caption="perplexity per domain")
        if result.timings:
            report.section("Speed", "Medians of interleaved rounds on this machine (CPU).")
            report.table([[k, v] for k, v in result.timings.items()], ["measure", "value"])
        report.save(tmp / "report.html")
    return Path(out) / "report.html"


def _curves(result: MoefyEval) -> dict[str, tuple[list[float], list[float]]]:
    """``{selection: (experts used %, mean perplexity change %)}``; dynamic-K points form one curve."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for p in result.points:
        name = p.mode if p.top_k is not None else "dynamic K (router)"
        xs, ys = series.setdefault(name, ([], []))
        xs.append(100 * p.fraction)
        ys.append(100 * result.change(p))
    return series


def _per_domain_rows(result: MoefyEval) -> list[list[Any]]:
    """The dense baseline, then one row per point: selection, K (or experts used), perplexity per domain."""
    domains = list(result.dense_ppl)
    rows: list[list[Any]] = [["dense", "-"] + [result.dense_ppl[d] for d in domains]]
    for p in result.points:
        rows.append([p.mode, p.top_k if p.top_k is not None else f"{p.fraction:.0%}"] + [p.ppl[d] for d in domains])
    return rows
