"""The trace pipeline: a :class:`TraceConfig` in, a :class:`TraceResult` out.

:func:`trace_model` guards the output, reads the documents, loads the routed model, captures the
routing, summarises it and (with ``out``) writes report.html, trace.json, trace.pt and figures/.
``lmbricks trace`` and the tour's trace section call it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lmbricks.errors import ConfigError
from lmbricks.trace.capture import capture_routing, tokenize_domains
from lmbricks.trace.inputs import domain_texts, load_routed_model, read_text_sources
from lmbricks.trace.report import build_report
from lmbricks.trace.summary import summarise
from lmbricks.trace.tracers import AdapterRouterTracer, Tracer
from lmbricks.trace.types import RoutingTrace


class TraceConfig(BaseModel):
    """What to trace and how much of it.

    Attributes:
        domains: stored domain names, read with :func:`lmbricks.data.load_texts`.
        texts: ``{domain: [text file or folder, ...]}`` (:func:`~lmbricks.trace.inputs.read_text_documents`).
        split: which split of the stored domains.
        docs_per_domain: at most this many documents per domain.
        max_tokens: tokens kept per document.
        min_tokens: shorter documents are skipped.
        layer: model layer for the token colouring (default: the middle routed layer).
        folds: cross-validation folds of the topic classifier.
        seed: fold shuffling seed.
        batch_size: documents per forward pass.
        adapter_router: trace adapter routing: a router JSON (``lmbricks adapters``) over the model.
        adapter_top_k: bricks chosen per input with ``adapter_router``.
    """

    model_config = ConfigDict(extra="forbid")

    domains: tuple[str, ...] = ()
    texts: dict[str, list[Path]] = Field(default_factory=dict)
    split: str = "test"
    docs_per_domain: int = Field(default=40, ge=1)
    max_tokens: int = 256
    min_tokens: int = 8
    layer: int | None = None
    folds: int = 5
    seed: int = 0
    batch_size: int = 8
    adapter_router: Path | None = None
    adapter_top_k: int = Field(default=1, ge=1)

    def input_paths(self) -> list[Path]:
        """The files this config reads, which an output folder must keep apart from."""
        router = [self.adapter_router] if self.adapter_router is not None else []
        return [*router, *(p for paths in self.texts.values() for p in paths)]


@dataclass
class TraceResult:
    """What :func:`trace_model` returns.

    Attributes:
        trace: the captured routing.
        summary: the numbers (:func:`~lmbricks.trace.summary.summarise`, plus ``model`` and ``colour_layer``).
        out: the output folder (report.html, trace.json, trace.pt, figures/), or None when not written.
    """

    trace: RoutingTrace
    summary: dict[str, Any]
    out: Path | None


def trace_model(
    model: str | Path | Any,
    config: TraceConfig | None = None,
    *,
    texts: Mapping[str, Sequence[str]] | None = None,
    tokenizer: Any = None,
    tracer: Tracer | None = None,
    out: str | Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TraceResult:
    """Trace a routed model over documents by domain; optionally write the HTML report and JSON.

    Args:
        model: a model reference (directory, GGUF, registry name) or a loaded model (then pass ``tokenizer``).
        config: domains, text files and budgets (default :class:`TraceConfig`).
        texts: ``{domain: [document, ...]}`` to trace beside (or instead of) the config's domains.
        tokenizer: the tokenizer of a loaded ``model``.
        tracer: how to read the routing (default: the config's adapter router, else
            :func:`~lmbricks.trace.find_tracer`).
        out: folder for report.html, trace.json, trace.pt and figures/ (written atomically);
            None writes nothing.
        force: replace an existing ``out`` (one lmbricks wrote).
        progress: called with ``(done, total)`` documents.

    Returns:
        The :class:`TraceResult`.
    """
    config = config or TraceConfig()
    if not config.domains and not config.texts and not texts:
        raise ConfigError("give at least one domain (--domain) or texts")
    guarded = guard_output(model, config, out, force)  # before any load
    documents = {**domain_texts(config.domains, config.split), **read_text_sources(config.texts), **(texts or {})}
    model, tokenizer, name = _load(model, tokenizer)
    docs, doc_domains = tokenize_domains(
        tokenizer, documents, config.max_tokens, config.min_tokens, config.docs_per_domain
    )
    tracer = tracer or adapter_tracer(config)
    trace = capture_routing(model, docs, doc_domains, tracer=tracer, batch_size=config.batch_size, progress=progress)
    result = TraceResult(trace, summarise_trace(trace, name, config), None)
    if out is not None:
        result.out = write_trace(result, Path(out), tokenizer, force=force, inputs=guarded)
    return result


def guard_output(model: str | Path | Any, config: TraceConfig, out: str | Path | None, force: bool) -> list[Path]:
    """Refuse ``out`` before any work if it holds an input or an earlier output (without ``force``).

    Returns:
        The input paths ``out`` must keep apart from (the config's files and the model reference).
    """
    guarded = config.input_paths()
    if out is None:
        return guarded
    from lmbricks.checkpoint import check_output
    from lmbricks.hub import reference_paths

    if isinstance(model, (str, Path)):
        guarded += reference_paths(model)
    check_output(out, guarded, force)
    return guarded


def _load(model: str | Path | Any, tokenizer: Any) -> tuple[Any, Any, str]:
    """``(model, tokenizer, name)``: a reference is loaded, a loaded model is named by its class."""
    if isinstance(model, (str, Path)):
        name = Path(str(model)).name or str(model)
        model, tok, _ = load_routed_model(model)
        tokenizer = tokenizer or tok
    else:
        name = type(model).__name__
    if tokenizer is None:
        raise ConfigError(f"{name}: no tokenizer (pass tokenizer=...)")
    return model, tokenizer, name


def adapter_tracer(config: TraceConfig) -> Tracer | None:
    """An :class:`~lmbricks.trace.AdapterRouterTracer` for ``config.adapter_router``, or None without one."""
    if config.adapter_router is None:
        return None
    from lmbricks.adapters.route import Router

    return AdapterRouterTracer(Router.load(config.adapter_router), top_k=config.adapter_top_k)


def summarise_trace(trace: RoutingTrace, name: str, config: TraceConfig) -> dict[str, Any]:
    """:func:`~lmbricks.trace.summary.summarise` plus ``model`` and ``colour_layer``.

    The topic classifier runs only with two domains of two documents each.
    """
    if config.layer is not None:
        trace.layer_position(config.layer)  # fail early on an untraced layer
    colour_layer = trace.layers[len(trace.layers) // 2] if config.layer is None else config.layer
    enough = len(trace.domains) >= 2 and min(trace.doc_domains.count(d) for d in trace.domains) >= 2
    return {
        "model": name,
        "colour_layer": colour_layer,
        **summarise(trace, folds=config.folds, seed=config.seed, topic=enough),
    }


def write_trace(
    result: TraceResult, dest: Path, tokenizer: Any, *, force: bool = False, inputs: Sequence[str | Path] = ()
) -> Path:
    """Write report.html, trace.json, trace.pt, figures/ and lmbricks.json into ``dest`` atomically.

    Adds ``report`` (the path of report.html) to ``result.summary``.

    Returns:
        ``dest``.
    """
    from lmbricks.checkpoint import atomic_directory, write_provenance

    s = result.summary
    with atomic_directory(dest, force=force, inputs=inputs) as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        write_provenance(tmp, command="lmbricks trace", recipe={"report": s["model"]}, inputs={})
        report = build_report(result.trace, s, tmp / "figures", s["model"], tokenizer, s["colour_layer"])
        s["report"] = str(dest / "report.html")
        report.save(tmp / "report.html")
        (tmp / "trace.json").write_text(json.dumps(s, indent=2))
        result.trace.save(tmp / "trace.pt")
    return dest
