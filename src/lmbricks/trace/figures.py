"""The routing figures and headline numbers that the trace report and the tour's trace section share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.report import bar_chart, heatmap, line_chart

#: The topic rows that are not single layers, in the order the bar chart shows them.
TOPIC_BASELINES = ("majority class", "bag of words", "all layers")


def pct(x: float, digits: int = 1) -> str:
    """``0.1234`` -> ``12.3%`` (``digits`` decimals)."""
    return f"{100 * x:.{digits}f}%"


def mean_rate(consecutive: Sequence[Mapping[str, Any]], key: str) -> float:
    """The mean over layers of one consecutive-token rate (``same_top1``, ``topk_overlap``)."""
    return sum(float(c[key]) for c in consecutive) / len(consecutive)


def layer_shares(histograms: Mapping[str, Sequence[Sequence[float]]], position: int) -> dict[str, list[float]]:
    """``{domain: share of its (token, slot) pairs per expert}`` at one traced layer (rows sum to 1)."""
    out = {}
    for domain, counts in histograms.items():
        row = [float(c) for c in counts[position]]
        total = sum(row) or 1.0
        out[domain] = [c / total for c in row]
    return out


def largest_spread(rows: Sequence[Sequence[float]]) -> float:
    """The largest difference between two rows in one column (0 for fewer than two rows)."""
    return max(max(col) - min(col) for col in zip(*rows, strict=True)) if len(rows) > 1 else 0.0


@dataclass(frozen=True)
class TopicView:
    """The topic classifier's rows by name.

    Attributes:
        by: ``{features: row}`` (rows of :class:`~lmbricks.trace.topic.TopicScore` as dictionaries).
        layers: the single-layer rows (``layer 3``), in order.
        best: the single-layer row of highest accuracy, or None without single-layer rows.
    """

    by: dict[str, dict[str, Any]]
    layers: list[dict[str, Any]]
    best: dict[str, Any] | None

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]]) -> TopicView:
        """Index the rows of ``summary["topic"]``."""
        layers = [r for r in rows if str(r["features"]).startswith("layer ")]
        best = max(layers, key=lambda r: r["accuracy"]) if layers else None
        return cls({r["features"]: r for r in rows}, layers, best)

    def accuracy(self, name: str) -> float:
        """The accuracy of the row ``name`` (``all layers``, ``bag of words``, ...)."""
        return float(self.by[name]["accuracy"])


def expert_heatmap(path: Path, shares: Mapping[str, Sequence[float]], title: str) -> Path:
    """Domains x experts heatmap of routing shares (annotated up to 16 experts)."""
    e = len(next(iter(shares.values())))
    return heatmap(
        path,
        [list(v) for v in shares.values()],
        rows=list(shares),
        cols=[f"e{j}" for j in range(e)],
        title=title,
        annotate=e <= 16,
    )


def consecutive_chart(
    path: Path, consecutive: Sequence[Mapping[str, Any]], k: int, baselines: Mapping[str, float], title: str
) -> Path:
    """Per-layer same-top-1 and top-k overlap rates of consecutive tokens beside the random router's."""
    xs = [c["layer"] for c in consecutive]
    r1, rk = baselines["same_top1"], baselines["topk_overlap"]
    return line_chart(
        path,
        {
            "same top-1": (xs, [c["same_top1"] for c in consecutive]),
            f"top-{k} overlap": (xs, [c["topk_overlap"] for c in consecutive]),
            "random top-1": (xs, [r1] * len(xs)),
            f"random top-{k} overlap": (xs, [rk] * len(xs)),
        },
        title,
        "layer",
        "rate",
    )


def topic_chart(path: Path, topic: TopicView, title: str) -> Path:
    """Bars of the baselines, all layers and the best single layer."""
    bars = {name: topic.accuracy(name) for name in TOPIC_BASELINES}
    if topic.best is not None:
        bars[f"best: {topic.best['features']}"] = topic.best["accuracy"]
    return bar_chart(path, bars, title, "accuracy")
