"""The tour: a list of sections, each measuring something on the default model and reporting it.

Each section function receives the shared :class:`TourContext`, adds its part to the report and
returns rows for the summary table. Sections compute their interpretation from their own numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmbricks.errors import ConfigError
from lmbricks.report import Report


@dataclass
class TourContext:
    """What every section can use: the model, where to write, the budget mode and the report."""

    model_ref: str
    model_path: Path
    out_dir: Path
    quick: bool
    report: Report
    log: Callable[[str], None] = print
    results: dict[str, Any] = field(default_factory=dict)
    _model: Any = None
    _tokenizer: Any = None

    @property
    def cache_dir(self) -> Path:
        """Artefacts that later sections (and later runs of the tour) reuse: built models, bricks, results."""
        path = self.out_dir / "cache"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def eval_bytes(self) -> int:
        """Held-out bytes per domain for the per-model evaluations of later sections (kept small: time)."""
        return 1_000 if self.quick else 3_000

    def model_and_tokenizer(self) -> tuple[Any, Any]:
        """The default model loaded once for every section (fp32, eval mode)."""
        if self._model is None:
            from lmbricks import load_model

            self._model, self._tokenizer = load_model(self.model_path)
        return self._model, self._tokenizer


SummaryRow = tuple[str, str, str]  # (section, headline metric, value)
Section = Callable[[TourContext], list[SummaryRow]]


def default_sections() -> list[tuple[str, Section]]:
    """The sections in report order (each module is one idea; see its docstring)."""
    from lmbricks.tour.bricks import bricks_section
    from lmbricks.tour.grow import grow_section
    from lmbricks.tour.merge import merge_section
    from lmbricks.tour.moe import moe_section
    from lmbricks.tour.moefy import moefy_section
    from lmbricks.tour.proxy import proxy_section
    from lmbricks.tour.sections import domains_section, inventory_section
    from lmbricks.tour.sparsity import sparsity_section
    from lmbricks.tour.trace import trace_section
    from lmbricks.tour.tuning import tuning_section

    return [
        ("inventory", inventory_section),
        ("domains", domains_section),
        ("sparsity", sparsity_section),
        ("moefy", moefy_section),
        ("bricks", bricks_section),
        ("merge", merge_section),
        ("grow", grow_section),  # sets results["routed_model"], traced next
        ("trace", trace_section),
        ("moe", moe_section),
        ("proxy", proxy_section),
        ("tuning", tuning_section),
    ]


def run_tour(
    out_dir: Path = Path("runs/tour"),
    quick: bool = False,
    model_ref: str = "smollm2-135m-instruct",
    sections: list[tuple[str, Section]] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run every section and write ``out_dir/report.html`` (plus ``results.json`` and the PNGs).

    Args:
        out_dir: where the report, plots and numbers go.
        quick: trim every budget (CI uses this).
        model_ref: the model to tour (registry name, directory or GGUF).
        sections: override the section list (tests).
        log: one-line progress messages.

    Returns:
        Path to the HTML report.
    """
    from lmbricks.checkpoint import check_apart
    from lmbricks.hub import reference_paths, resolve_model

    out_dir = check_apart(out_dir, reference_paths(model_ref))  # never into (or around) the model
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; the tour writes a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report("lmbricks tour", f"Model: {model_ref}{' (quick mode)' if quick else ''}")
    ctx = TourContext(model_ref, resolve_model(model_ref), out_dir, quick, report, log)
    summary: list[SummaryRow] = []
    timings: dict[str, float] = {}
    for name, section in sections if sections is not None else default_sections():
        log(f"tour: {name}")
        start = time.perf_counter()
        summary.extend(section(ctx))
        timings[name] = round(time.perf_counter() - start, 2)
    report.summary([list(row) for row in summary], ["section", "measure", "value"])
    report.section("Run", "Seconds spent in each section of this tour.")
    report.table([[k, v] for k, v in timings.items()], ["section", "seconds"])
    (out_dir / "results.json").write_text(json.dumps({**ctx.results, "timings_s": timings}, indent=2))
    return report.save(out_dir / "report.html")
