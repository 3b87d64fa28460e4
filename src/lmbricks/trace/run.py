"""``trace_model``: load a routed model, read documents by domain, capture, summarise, write the report."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.errors import ConfigError
from lmbricks.trace.capture import capture_routing, tokenize_domains
from lmbricks.trace.report import build_report
from lmbricks.trace.summary import summarise
from lmbricks.trace.tracers import Tracer
from lmbricks.trace.types import RoutingTrace


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


def load_routed_model(ref: str | Path) -> tuple[Any, Any, Path]:
    """Load a model for tracing.

    MoEfied directories load with :func:`lmbricks.moefy.load_moefied`, other directories with an
    ``lmbricks`` section in config.json with :func:`lmbricks.nn.load_model`;
    everything else with transformers, so Hugging Face routers are read as Hugging Face runs them.

    Returns:
        ``(model, tokenizer, path)`` in eval mode, fp32, on the CPU.
    """
    import torch

    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import read_config

    path = resolve_model(ref)
    from lmbricks.moefy import is_moefied, load_moefied

    if is_moefied(path):
        model, tok = load_moefied(path)
        return model, tok, path
    if "lmbricks" in read_config(path):
        from lmbricks.nn import load_model

        model, tok = load_model(path, dtype=torch.float32)
        return model, tok, path
    from lmbricks.hub import load_hf_model

    model, tok = load_hf_model(path, dtype=torch.float32)
    return model, tok, path


def domain_texts(
    domains: Sequence[str], split: str, loader: Callable[[str, str], list[str]] | None = None
) -> dict[str, list[str]]:
    """``{domain: texts}`` from ``loader(domain, split)`` (default :func:`lmbricks.data.load_texts`)."""
    if loader is None:
        from lmbricks.data import load_texts

        loader = load_texts
    return {d: loader(d, split) for d in domains}


def trace_model(
    model: str | Path | Any,
    domains: Sequence[str] = (),
    texts: Mapping[str, Sequence[str]] | None = None,
    *,
    tokenizer: Any = None,
    tracer: Tracer | None = None,
    split: str = "test",
    docs_per_domain: int = 40,
    max_tokens: int = 256,
    min_tokens: int = 8,
    layer: int | None = None,
    folds: int = 5,
    seed: int = 0,
    batch_size: int = 8,
    out: str | Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    inputs: Sequence[str | Path] = (),
) -> TraceResult:
    """Trace a routed model over documents by domain; optionally write the HTML report and JSON.

    Args:
        model: a model reference (directory, GGUF, registry name) or a loaded model (then pass ``tokenizer``).
        domains: domain names read with :func:`lmbricks.data.load_texts`.
        texts: ``{domain: [document, ...]}`` to trace beside (or instead of) the stored domains.
        tokenizer: the tokenizer of a loaded ``model``.
        tracer: how to read the routing (default: :func:`~lmbricks.trace.find_tracer`; pass an
            :class:`~lmbricks.trace.AdapterRouterTracer` to trace adapter routing over a base model).
        split: which split of the stored domains.
        docs_per_domain: at most this many documents per domain.
        max_tokens: tokens kept per document.
        min_tokens: shorter documents are skipped.
        layer: model layer for the token colouring (default: the middle routed layer).
        folds: cross-validation folds of the topic classifier.
        seed: fold shuffling seed.
        batch_size: documents per forward pass.
        out: folder for report.html, trace.json, trace.pt and figures/ (written atomically);
            None writes nothing.
        force: replace an existing ``out`` (one lmbricks wrote).
        progress: called with ``(done, total)`` documents.
        inputs: more paths ``out`` must keep apart from (text files, a router file); the model
            reference is added here.

    Returns:
        The :class:`TraceResult`.
    """
    if not domains and not texts:
        raise ConfigError("give at least one domain (--domain) or texts")
    guarded = [*inputs]
    if out is not None:
        from lmbricks.checkpoint import check_output
        from lmbricks.hub import reference_paths

        if isinstance(model, (str, Path)):
            guarded += reference_paths(model)
        check_output(out, guarded, force)  # before any load
    texts = {**domain_texts(domains, split), **(texts or {})}
    if isinstance(model, (str, Path)):
        name = Path(str(model)).name or str(model)
        model, tok, _ = load_routed_model(model)
        tokenizer = tokenizer or tok
    else:
        name = type(model).__name__
    if tokenizer is None:
        raise ConfigError(f"{name}: no tokenizer (pass tokenizer=...)")
    docs, doc_domains = tokenize_domains(tokenizer, texts, max_tokens, min_tokens, docs_per_domain)
    trace = capture_routing(model, docs, doc_domains, tracer=tracer, batch_size=batch_size, progress=progress)
    if layer is not None:
        trace.layer_position(layer)
    colour_layer = trace.layers[len(trace.layers) // 2] if layer is None else layer
    enough = len(trace.domains) >= 2 and min(trace.doc_domains.count(d) for d in trace.domains) >= 2
    summary = {
        "model": name,
        "colour_layer": colour_layer,
        **summarise(trace, folds=folds, seed=seed, topic=enough),
    }
    if out is None:
        return TraceResult(trace, summary, None)
    from lmbricks.checkpoint import atomic_directory, write_provenance

    dest = Path(out)
    with atomic_directory(dest, force=force, inputs=guarded) as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        write_provenance(tmp, command="lmbricks trace", recipe={"report": name}, inputs={})
        report = build_report(trace, summary, tmp / "figures", name, tokenizer, colour_layer)
        summary["report"] = str(dest / "report.html")
        report.save(tmp / "report.html")
        (tmp / "trace.json").write_text(json.dumps(summary, indent=2))
        trace.save(tmp / "trace.pt")
    return TraceResult(trace, summary, dest)


def read_text_documents(path: str | Path) -> list[str]:
    """Documents from a text file (paragraphs separated by blank lines) or a folder (one ``*.txt`` file each).

    Raises:
        ConfigError: the path is missing, not UTF-8, or holds no text.
    """
    p = Path(path)
    try:
        if p.is_dir():
            docs = [f.read_text(encoding="utf-8").strip() for f in sorted(p.glob("*.txt"))]
        elif p.is_file():
            docs = [part.strip() for part in p.read_text(encoding="utf-8").split("\n\n")]
        else:
            raise ConfigError(f"{p}: no such text file or folder")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason})") from None
    docs = [d for d in docs if d]
    if not docs:
        raise ConfigError(f"{p}: no text")
    return docs
