"""The tour: a list of sections, each measuring something on the default model and reporting it.

Each section function receives the shared :class:`TourContext`, adds its part to the report and
returns rows for the summary table. Sections compute their interpretation from their own numbers.
A section that cannot do its core work raises (and is reported as failed); one that has
legitimately nothing to do raises :class:`SkipSection` with the reason.
"""

from __future__ import annotations

import difflib
import json
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from lmbricks.errors import ConfigError, LmbricksError

if TYPE_CHECKING:  # the report pulls in matplotlib; `lmbricks --help` should not wait for it
    from lmbricks.report import Report
    from lmbricks.runtime import Precision, RequestedPrecision


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
    precision: Precision = "fp32"  # of the inference-only sections (what --precision resolved to)
    requested_precision: str = "auto"  # what --precision said (the reproduce commands repeat it)
    _model: Any = None
    _tokenizer: Any = None
    _inference_model: Any = None

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

    def inference_model(self) -> tuple[Any, Any]:
        """The default model for inference-only sections: bf16 weights when ``precision`` is bf16.

        Sections that build, merge or compare models keep :meth:`model_and_tokenizer` (fp32); the
        bf16 copy is loaded once, beside it.
        """
        model, tokenizer = self.model_and_tokenizer()
        if self.precision == "fp32":
            return model, tokenizer
        if self._inference_model is None:
            from lmbricks import load_model
            from lmbricks.runtime import inference_dtype

            self._inference_model, _ = load_model(self.model_path, dtype=inference_dtype(self.precision))
        return self._inference_model, tokenizer


SummaryRow = tuple[str, str, str]  # (section, headline metric, value)
Section = Callable[[TourContext], list[SummaryRow]]

DEFAULT_MODEL = "smollm2-135m-instruct"
#: The sections of :func:`default_sections`, in report order (``lmbricks tour --section NAME``).
SECTION_NAMES = (
    "inventory", "domains", "sparsity", "moefy", "bricks", "merge", "grow", "trace", "moe", "proxy", "tuning",
    "plugins", "align",
)  # fmt: skip


class SkipSection(Exception):
    """Raised by a section that has legitimately nothing to do here (no bricks for this model, say).

    The report shows ``skipped: <reason>`` in the section and the summary marks it skipped. Anything
    else a section raises is a failure: a section that cannot do its core work must not pass.
    """


@dataclass
class SectionOutcome:
    """How one section ended.

    Attributes:
        name: the section's name (``--section NAME``).
        status: ``"passed"``, ``"skipped"`` or ``"failed"``.
        seconds: wall-clock time spent in it.
        cpu_seconds: the process's CPU time spent in it (all threads; steadier than the wall time on a
            shared machine, and above it where a section keeps several cores busy).
        rows: its summary rows (passed sections only).
        error: ``"ExceptionType: message"`` of a failure, or the reason of a skip.
        traceback: a short traceback, for failures by an unexpected exception (not an
            :class:`~lmbricks.errors.LmbricksError`, whose message says what to do).
        reproduce: the command that runs the section again.
    """

    name: str
    status: Literal["passed", "skipped", "failed"]
    seconds: float
    rows: list[SummaryRow] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    reproduce: str | None = None
    cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "seconds": self.seconds,
                               "cpu_seconds": self.cpu_seconds}  # fmt: skip
        if self.status == "failed":
            out.update(error=self.error, reproduce=self.reproduce)
        elif self.status == "skipped":
            out["reason"] = self.error
        return out


class TourFailed(LmbricksError):
    """One or more sections failed; raised by :func:`run_tour` after the report was written.

    Attributes:
        report: the written HTML report.
        outcomes: every section's :class:`SectionOutcome`, in report order.
    """

    def __init__(self, report: Path, outcomes: Sequence[SectionOutcome]) -> None:
        self.report = report
        self.outcomes = list(outcomes)
        super().__init__(
            f"tour section(s) failed: {', '.join(self.failed)}; {report} shows each error and the command "
            "that reproduces it"
        )

    @property
    def failed(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status == "failed"]


def default_sections() -> list[tuple[str, Section]]:
    """The sections in report order (each module is one idea; see its docstring)."""
    from lmbricks.tour.align import align_section
    from lmbricks.tour.bricks import bricks_section
    from lmbricks.tour.grow import grow_section
    from lmbricks.tour.merge import merge_section
    from lmbricks.tour.moe import moe_section
    from lmbricks.tour.moefy import moefy_section
    from lmbricks.tour.plugins import plugins_section
    from lmbricks.tour.proxy import proxy_section
    from lmbricks.tour.sections import domains_section, inventory_section
    from lmbricks.tour.sparsity import sparsity_section
    from lmbricks.tour.trace import trace_section
    from lmbricks.tour.tuning import tuning_section

    functions: list[Section] = [
        inventory_section,
        domains_section,
        sparsity_section,
        moefy_section,
        bricks_section,
        merge_section,
        grow_section,  # sets results["routed_model"], traced next
        trace_section,
        moe_section,
        proxy_section,
        tuning_section,
        plugins_section,
        align_section,
    ]
    return list(zip(SECTION_NAMES, functions, strict=True))


def select_sections(sections: Sequence[tuple[str, Section]], only: Sequence[str]) -> list[tuple[str, Section]]:
    """The sections named in ``only``, kept in report order (later sections read earlier ones' results).

    Raises:
        ConfigError: a name that is no section (the known names and the nearest one are given).
    """
    known = [name for name, _ in sections]
    for name in only:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"no tour section {name!r} (sections: {', '.join(known)}){hint}")
    return [(name, fn) for name, fn in sections if name in only]


def reproduce_command(name: str, out_dir: Path, quick: bool, model_ref: str, precision: str = "auto") -> str:
    """The shell command that runs section ``name`` alone, with this run's options and output folder."""
    parts = ["lmbricks", "tour", "--section", name, "--out", str(out_dir)]
    if quick:
        parts.append("--quick")
    if precision != "auto":
        parts += ["--precision", precision]
    if model_ref != DEFAULT_MODEL:
        parts += ["--model", model_ref]
    return " ".join(shlex.quote(p) for p in parts)


def _error_line(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _short_traceback(exc: BaseException, frames: int = 6) -> str:
    """The last ``frames`` frames of the traceback and the exception line."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-frames)).rstrip()


def _first_line(text: str, limit: int = 160) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run_section(ctx: TourContext, name: str, section: Section) -> tuple[SectionOutcome, BaseException | None]:
    """Run one section; what it raises is caught and written into the report, never passed on.

    A :class:`SkipSection` marks the section skipped with its reason; any other exception marks it
    failed, with the error, the command that reproduces it and (for exceptions that are not an
    :class:`~lmbricks.errors.LmbricksError`) a short traceback. A section that raises before starting
    its own part of the report gets a part titled ``Section <name>``.

    Returns:
        The outcome and the exception of a failure (None otherwise).
    """
    report = ctx.report
    before = len(report.sections)
    start = (time.perf_counter(), time.process_time())
    try:
        rows = list(section(ctx))
        if not rows:  # `return []` is the shape of a silent skip: say what was measured, skip or fail
            raise RuntimeError(
                f"section {name!r} passed without a summary row: a section reports what it measured, "
                "raises SkipSection when it has nothing to do, or fails"
            )
    except SkipSection as exc:
        outcome = SectionOutcome(name, "skipped", **_elapsed(start), error=str(exc) or "no reason given")
        if len(report.sections) == before:
            report.section(f"Section {name}")
        report.skipped(str(outcome.error))
        ctx.log(f"tour: {name} skipped: {outcome.error}")
        return outcome, None
    except Exception as exc:  # a failing section must not take the report with it
        tb = None if isinstance(exc, LmbricksError) else _short_traceback(exc)
        command = reproduce_command(name, ctx.out_dir, ctx.quick, ctx.model_ref, ctx.requested_precision)
        outcome = SectionOutcome(name, "failed", **_elapsed(start), error=_error_line(exc), traceback=tb,
                                 reproduce=command)  # fmt: skip
        if len(report.sections) == before:
            report.section(f"Section {name}")
        report.failure(str(outcome.error), command, tb)
        ctx.log(f"tour: {name} FAILED: {_first_line(str(outcome.error))}")
        return outcome, exc
    return SectionOutcome(name, "passed", **_elapsed(start), rows=rows), None


class _Elapsed(TypedDict):
    seconds: float
    cpu_seconds: float


def _elapsed(start: tuple[float, float]) -> _Elapsed:
    """``seconds`` (wall) and ``cpu_seconds`` (process CPU) since ``start`` = (perf_counter, process_time)."""
    return {
        "seconds": round(time.perf_counter() - start[0], 2),
        "cpu_seconds": round(time.process_time() - start[1], 2),
    }


def _summary(report: Report, outcomes: Sequence[SectionOutcome]) -> None:
    rows: list[list[str]] = []
    classes: list[str] = []
    for o in outcomes:
        if o.status == "passed":
            rows += [list(row) for row in o.rows]
            classes += [""] * len(o.rows)
        else:
            rows.append([o.name, o.status.upper() if o.status == "failed" else o.status, _first_line(o.error or "")])
            classes.append(o.status)
    counts = {s: [o.name for o in outcomes if o.status == s] for s in ("passed", "failed", "skipped")}
    note = f"{len(outcomes)} section(s): {len(counts['passed'])} passed"
    for status in ("failed", "skipped"):
        if counts[status]:
            note += f", {len(counts[status])} {status} ({', '.join(counts[status])})"
    report.summary(rows, ["section", "measure", "value"], row_classes=classes, note=note + ".")


def run_tour(
    out_dir: Path = Path("runs/tour"),
    quick: bool = False,
    model_ref: str = DEFAULT_MODEL,
    sections: list[tuple[str, Section]] | None = None,
    log: Callable[[str], None] = print,
    only: Sequence[str] | None = None,
    precision: RequestedPrecision = "auto",
) -> Path:
    """Run every section and write ``out_dir/report.html`` (plus ``results.json`` and the PNGs).

    A section that raises does not stop the tour: the report shows its error and the command that
    reproduces it, the summary marks it failed, the other sections run, and once the report is
    written :class:`TourFailed` is raised. A section that raises :class:`SkipSection` is shown as
    skipped, with its reason.

    Args:
        out_dir: where the report, plots and numbers go.
        quick: trim every budget (CI uses this).
        model_ref: the model to tour (registry name, directory or GGUF).
        sections: override the section list (tests).
        log: one-line progress messages.
        only: run only the sections of these names (in report order; ``lmbricks tour --section``).
        precision: ``auto`` (bf16 weights for the inference-only sections where the CPU has native
            bf16, :func:`lmbricks.runtime.resolve_precision`), ``bf16`` or ``fp32`` (the fp32 tour).

    Returns:
        Path to the HTML report.

    Raises:
        TourFailed: after writing the report, when a section failed.
        ConfigError: ``only`` names no section.
    """
    from lmbricks.hub import resolve_model
    from lmbricks.report import Report
    from lmbricks.runtime import resolve_precision

    chosen = sections if sections is not None else default_sections()
    if only:
        chosen = select_sections(chosen, only)
    out_dir = _prepare_out_dir(out_dir, model_ref)
    resolved = resolve_precision(precision, "cpu")
    report = Report("lmbricks tour", f"Model: {model_ref}{' (quick mode)' if quick else ''}, {resolved} inference")
    ctx = TourContext(model_ref, resolve_model(model_ref), out_dir, quick, report, log, precision=resolved,
                      requested_precision=precision)  # fmt: skip
    outcomes: list[SectionOutcome] = []
    first_error: BaseException | None = None
    for name, section in chosen:
        log(f"tour: {name}")
        outcome, exc = run_section(ctx, name, section)
        outcomes.append(outcome)
        first_error = first_error or exc
    path = _write_outputs(ctx, outcomes)
    if first_error is not None:
        raise TourFailed(path, outcomes) from first_error
    return path


def _prepare_out_dir(out_dir: Path, model_ref: str) -> Path:
    """The tour's output folder, created: never into (or around) the model, never a file."""
    from lmbricks.checkpoint import check_apart
    from lmbricks.hub import reference_paths

    out_dir = check_apart(out_dir, reference_paths(model_ref))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; the tour writes a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _write_outputs(ctx: TourContext, outcomes: Sequence[SectionOutcome]) -> Path:
    """The summary and timing tables, report.html and results.json; returns the report's path."""
    report = ctx.report
    _summary(report, outcomes)
    report.section("Run", "Seconds spent in each section of this tour: wall clock, and the process's CPU time.")
    report.table([[o.name, o.status, o.seconds, o.cpu_seconds] for o in outcomes],
                 ["section", "status", "seconds", "CPU seconds"])  # fmt: skip
    path = report.save(ctx.out_dir / "report.html")
    results = {
        **ctx.results,
        "precision": ctx.precision,
        "timings_s": {o.name: o.seconds for o in outcomes},
        "timings_cpu_s": {o.name: o.cpu_seconds for o in outcomes},
        "sections": [o.to_dict() for o in outcomes],
    }
    # default=str: a failed section may have left something unserialisable; the numbers must still be written
    (ctx.out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return path
