"""The analysis pipelines: a model reference and a config in, the result and its report out.

``lmbricks analyze sparsity`` runs :func:`run_sparsity`, ``lmbricks analyze neurons`` runs
:func:`run_neurons`: guard the output folder, load the model (in the config's precision: bf16 weights
under ``auto`` where the CPU multiplies bf16 natively), analyse, write the HTML report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from lmbricks.analysis.neurons import NeuronConfig, NeuronResult, analyze_neurons
from lmbricks.analysis.reporting import write_neuron_report, write_sparsity_report
from lmbricks.analysis.sparsity import SparsityConfig, SparsityResult, analyze_sparsity
from lmbricks.runtime.precision import inference_dtype, resolve_precision

R = TypeVar("R")


@dataclass
class AnalysisRun(Generic[R]):
    """What a pipeline returns.

    Attributes:
        result: the analysis (:class:`~lmbricks.analysis.SparsityResult` or :class:`~lmbricks.analysis.NeuronResult`).
        report: the path of report.html.
    """

    result: R
    report: Path


def run_sparsity(
    model: str | Path,
    config: SparsityConfig,
    out: Path,
    *,
    force: bool = False,
    texts_of: Callable[[str, str], list[str]] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> AnalysisRun[SparsityResult]:
    """Activation sparsity of a dense model (:func:`~lmbricks.analysis.analyze_sparsity`) and its report.

    Args:
        model: registry name, model directory or .gguf file.
        config: what to measure; its ``precision`` decides the loaded weights' dtype (``auto``: bf16
            where the CPU has native bf16), and the result's config records what it resolved to.
        out: the report folder (refused if it exists unless ``force`` and lmbricks wrote it).
        force: replace an earlier report.
        texts_of: ``(domain, split) -> documents`` (default :func:`lmbricks.data.load_texts`).
        on_step: called with a description before each forward sweep (progress).

    Returns:
        The :class:`AnalysisRun`.
    """
    config = replace(config, precision=resolve_precision(config.precision, "cpu"))
    return _run(
        model,
        out,
        force,
        config.precision,
        lambda lm, tok: analyze_sparsity(lm, tok, config, texts_of, on_step),
        write_sparsity_report,
    )


def run_neurons(
    model: str | Path,
    config: NeuronConfig,
    out: Path,
    *,
    force: bool = False,
    texts_of: Callable[[str, str], list[str]] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> AnalysisRun[NeuronResult]:
    """Capability neurons of a dense model (:func:`~lmbricks.analysis.analyze_neurons`) and their report.

    Args and return value as for :func:`run_sparsity`.
    """
    config = replace(config, precision=resolve_precision(config.precision, "cpu"))
    return _run(
        model,
        out,
        force,
        config.precision,
        lambda lm, tok: analyze_neurons(lm, tok, config, texts_of, on_step),
        write_neuron_report,
    )


def _run(
    model: str | Path,
    out: Path,
    force: bool,
    precision: str,
    analyse: Callable[[Any, Any], R],
    write: Callable[[R, Path, str, bool, Sequence[str | Path]], Path],
) -> AnalysisRun[R]:
    from lmbricks.checkpoint import check_output
    from lmbricks.hub import load_hf_model, reference_paths

    inputs = reference_paths(model)
    check_output(out, inputs, force)  # before any fetch or load
    lm, tokenizer = load_hf_model(model, dtype=inference_dtype(resolve_precision(precision, "cpu")))
    result = analyse(lm, tokenizer)
    return AnalysisRun(result, write(result, out, str(model), force, inputs))
