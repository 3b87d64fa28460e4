"""Traceability: which experts fire, per token, layer and domain, for every routed model.

Capture a :class:`RoutingTrace` with :func:`capture_routing` (a :class:`Tracer` per model family,
registered with :func:`register_tracer`), then compute expert histograms and load
(:mod:`~lmbricks.trace.stats`), consecutive-token routing (:mod:`~lmbricks.trace.consecutive`),
token colouring (:mod:`~lmbricks.trace.colour`) and topic classification from routing
(:mod:`~lmbricks.trace.topic`). :func:`trace_model` (:mod:`~lmbricks.trace.pipeline`, a
:class:`TraceConfig` in, a :class:`TraceResult` out) does all of it and writes one HTML report.
"""

from lmbricks.trace.capture import capture_routing, tokenize_domains
from lmbricks.trace.colour import coloured_tokens_html, expert_colour, token_pieces
from lmbricks.trace.consecutive import (
    ConsecutiveStats,
    consecutive_rates,
    consecutive_stats,
    random_baselines,
)
from lmbricks.trace.inputs import load_routed_model, read_text_documents
from lmbricks.trace.pipeline import TraceConfig, TraceResult, trace_model
from lmbricks.trace.stats import LoadStats, doc_histograms, domain_histograms, load_stats, selection_counts
from lmbricks.trace.summary import summarise
from lmbricks.trace.topic import TopicScore, bag_of_words, cross_validate, topic_scores
from lmbricks.trace.tracers import (
    TRACERS,
    AdapterRouterTracer,
    AuxTracer,
    MoefiedTracer,
    RouterHookTracer,
    RouterLogitsTracer,
    Tracer,
    find_tracer,
    register_tracer,
)
from lmbricks.trace.types import LayerRouting, RoutingTrace, concat_traces

__all__ = [
    "TRACERS",
    "AdapterRouterTracer",
    "AuxTracer",
    "ConsecutiveStats",
    "LayerRouting",
    "LoadStats",
    "MoefiedTracer",
    "RouterHookTracer",
    "RouterLogitsTracer",
    "RoutingTrace",
    "TopicScore",
    "TraceConfig",
    "TraceResult",
    "Tracer",
    "bag_of_words",
    "capture_routing",
    "coloured_tokens_html",
    "concat_traces",
    "consecutive_rates",
    "consecutive_stats",
    "cross_validate",
    "doc_histograms",
    "domain_histograms",
    "expert_colour",
    "find_tracer",
    "load_routed_model",
    "load_stats",
    "random_baselines",
    "read_text_documents",
    "register_tracer",
    "selection_counts",
    "summarise",
    "token_pieces",
    "tokenize_domains",
    "topic_scores",
    "trace_model",
]
