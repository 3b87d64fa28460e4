"""All the numbers of a routing trace in one JSON-ready dictionary (what ``lmbricks trace --json`` prints)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lmbricks.trace.consecutive import consecutive_stats, random_baselines
from lmbricks.trace.stats import domain_histograms, load_stats
from lmbricks.trace.topic import topic_scores
from lmbricks.trace.types import RoutingTrace


def summarise(trace: RoutingTrace, folds: int = 5, seed: int = 0, topic: bool = True) -> dict[str, Any]:
    """Histograms, load balance, consecutive-token routing and topic classification of ``trace``.

    Args:
        trace: the captured routing.
        folds: cross-validation folds for the topic classifier.
        seed: fold shuffling seed.
        topic: run the topic classifier (needs two domains with two documents each).

    Returns:
        A dictionary of plain numbers and lists: ``layers``, ``num_experts``, ``top_k``, ``domains``
        (documents and tokens of each), ``histograms`` (``{domain: L x E counts}``, plus ``all``),
        ``load`` (per layer), ``random_baselines``, ``consecutive`` (per layer) and
        ``consecutive_by_domain``, ``topic`` (rows of :class:`~lmbricks.trace.topic.TopicScore`, or None).
    """
    token_domain = trace.token_domains()
    hists = domain_histograms(trace)
    r1, rk = random_baselines(trace.num_experts, trace.top_k)
    domains = {
        d: {
            "documents": sum(1 for x in trace.doc_domains if x == d),
            "tokens": int((token_domain == i).sum()),
        }
        for i, d in enumerate(trace.domains)
    }
    load = [{"layer": layer, **asdict(s)} for layer, s in zip(trace.layers, load_stats(hists["all"]), strict=True)]
    return {
        "source": trace.source,
        "layers": list(trace.layers),
        "num_experts": trace.num_experts,
        "top_k": trace.top_k,
        "documents": trace.num_docs,
        "tokens": trace.num_tokens,
        "domains": domains,
        "histograms": {d: h.tolist() for d, h in hists.items()},
        "load": load,
        "random_baselines": {"same_top1": r1, "topk_overlap": rk},
        "consecutive": [asdict(s) for s in consecutive_stats(trace)],
        "consecutive_by_domain": {
            d: [asdict(s) for s in consecutive_stats(trace, token_domain == i)] for i, d in enumerate(trace.domains)
        },
        "topic": [asdict(s) for s in topic_scores(trace, folds=folds, seed=seed)] if topic else None,
    }
