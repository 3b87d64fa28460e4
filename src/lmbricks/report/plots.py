"""Plot helpers: each takes data, writes one PNG and returns its path (Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_DPI = 110


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def bar_chart(
    path: Path,
    values: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    title: str,
    ylabel: str,
    annotate: bool = True,
) -> Path:
    """Bar chart of ``{label: value}``, or grouped bars of ``{series: {label: value}}``."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    first = next(iter(values.values()), None)
    if isinstance(first, Mapping):
        series: Mapping[str, Mapping[str, float]] = values  # type: ignore[assignment]
        labels = list(dict.fromkeys(k for s in series.values() for k in s))
        width = 0.8 / max(len(series), 1)
        for i, (name, vals) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, [vals.get(k, float("nan")) for k in labels], width, label=name)
        ax.set_xticks(range(len(labels)), labels)
        ax.legend(fontsize=8)
    else:
        flat: Mapping[str, float] = values  # type: ignore[assignment]
        bars = ax.bar(list(flat), list(flat.values()), color="#4c72b0")
        if annotate:
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def line_chart(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
) -> Path:
    """Lines of ``{name: (xs, ys)}``."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def heatmap(
    path: Path,
    matrix: Sequence[Sequence[float]],
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    annotate: bool = True,
) -> Path:
    """A labelled heatmap of ``matrix`` (rows x cols), values written in the cells when small."""
    import numpy as np

    data = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(cols) + 2), max(3.0, 0.35 * len(rows) + 1.5)))
    image = ax.imshow(data, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), list(cols), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    if annotate and data.size <= 150:
        for (i, j), v in np.ndenumerate(data):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    return _save(fig, path)
