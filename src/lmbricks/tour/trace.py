"""Tour section: trace the routed model: which experts each domain uses, consecutive tokens, topic from routing.

The routed model is the one the grow section assembled (``ctx.results["routed_model"]``: the default
model's MoE with its domain bricks as experts). Without it, the section MoEfies the default model
cheaply (k-means split of the gate rows, centroid routers, no training: a few seconds), caches it in
``ctx.cache_dir`` and says so in the report. The numbers come from :mod:`lmbricks.trace`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.tour.run import SummaryRow, TourContext
from lmbricks.trace import figures

FALLBACK_PREFIX = "trace_moefied-"  # + the model folder's name: the fallback routed model in ctx.cache_dir


@dataclass(frozen=True)
class TraceBudget:
    """How much text the section traces.

    Attributes:
        docs_per_domain: documents per domain (test split); the SVM's sample size.
        max_tokens: tokens kept per document.
        min_tokens: shorter documents are skipped.
        folds: stratified cross-validation folds of the topic SVM.
    """

    docs_per_domain: int
    max_tokens: int
    min_tokens: int = 16
    folds: int = 5

    @classmethod
    def for_mode(cls, quick: bool) -> TraceBudget:
        """8 documents of 64 tokens per domain in quick mode, 20 of 128 otherwise."""
        return cls(8, 64, folds=4) if quick else cls(20, 128, folds=5)


def fallback_experts(width: int, most: int = 16) -> tuple[int, int]:
    """(experts, top-k) for MoEfying an FFN of ``width`` neurons: the largest divisor <= ``most``, k = E / 4."""
    experts = max(e for e in range(1, min(most, width) + 1) if width % e == 0)
    return experts, max(1, experts // 4)


def fallback_dir(ctx: TourContext) -> Path:
    """Where the MoEfied fallback of the tour's model is cached (one folder per source model)."""
    return ctx.cache_dir / f"{FALLBACK_PREFIX}{Path(ctx.model_path).name}"


def build_fallback(ctx: TourContext) -> tuple[Any, Any, Path, str, bool]:
    """The cached MoEfied default model, built first if absent.

    Returns:
        ``(model, tokenizer, path, description, reused)``.
    """
    from lmbricks.moefy import is_moefied, make_config, moefy_model, save_moefied
    from lmbricks.moefy.io import read_section
    from lmbricks.trace import load_routed_model

    path = fallback_dir(ctx)
    reused = is_moefied(path)
    if reused:
        model, tok, _ = load_routed_model(path)
        section = read_section(path)
        experts, top_k = int(section["experts"]), int(section["top_k"])
    else:
        ctx.log(f"tour: trace: no routed model from the grow section; MoEfying {ctx.model_ref}")
        model, tok, _ = load_routed_model(ctx.model_path)
        experts, top_k = fallback_experts(int(model.config.intermediate_size))
        config = make_config(experts=experts, top_k=top_k, split="kmeans", router="centroid", kmeans_iters=10)
        info = moefy_model(model, tok, config)
        save_moefied(
            model,
            path,
            config,
            info.permutations,
            source=ctx.model_path,
            tokenizer=tok,
            force=path.exists(),
            command="lmbricks tour (trace section)",
        )
    width = int(model.config.intermediate_size)
    description = (
        f"{ctx.model_ref} MoEfied on the fly ({experts} experts of {width // experts} neurons per FFN, "
        f"k-means split of the gate rows, centroid routers, top-{top_k}, no training; cached in {path.name}/)"
    )
    return model, tok, path, description, reused


def routed_model(ctx: TourContext) -> tuple[Any, Any, Path, str, bool]:
    """The grow section's routed model if it left one in ``ctx.results["routed_model"]``, else the fallback."""
    from lmbricks.trace import load_routed_model

    ref = ctx.results.get("routed_model")
    if ref is not None and Path(str(ref)).exists():
        model, tok, path = load_routed_model(ref)
        return model, tok, path, f"the MoE assembled by the grow section ({Path(str(ref)).name})", True
    model, tok, path, description, reused = build_fallback(ctx)
    if ref is not None:
        description += f"; the grow section's model {ref} was not found"
    else:  # say why the fallback is traced, so a failed grow section is not mistaken for the plan
        description += "; the grow section left no assembled MoE in this run (it did not run, or it failed)"
    return model, tok, path, description, reused


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def trace_section(
    ctx: TourContext,
    texts: Mapping[str, Sequence[str]] | None = None,
    budget: TraceBudget | None = None,
) -> list[SummaryRow]:
    """Trace the routed model over the domains: expert heatmap, consecutive tokens, topic SVM.

    Args:
        ctx: the tour context (``ctx.results["routed_model"]`` names the model to trace, if set).
        texts: ``{domain: documents}`` to trace instead of the test split of the default domains.
        budget: documents and tokens per domain (default :meth:`TraceBudget.for_mode`).

    Returns:
        Summary rows: consecutive same-expert rate and topic accuracy.
    """
    from lmbricks.trace import TraceConfig, trace_model

    budget = budget or TraceBudget.for_mode(ctx.quick)
    model, tok, path, description, reused = routed_model(ctx)
    config = TraceConfig(
        domains=() if texts is not None else DEFAULT_DOMAINS,
        docs_per_domain=budget.docs_per_domain,
        max_tokens=budget.max_tokens,
        min_tokens=budget.min_tokens,
        folds=budget.folds,
    )
    s = trace_model(model, config, texts=texts, tokenizer=tok).summary
    layer = int(s["colour_layer"])  # the middle routed layer
    shares = figures.layer_shares(s["histograms"], s["layers"].index(layer))
    shares = {d: v for d, v in shares.items() if d != "all"}
    topic = figures.TopicView.of(s["topic"]) if s["topic"] else None
    ctx.results["trace"] = {
        "model": description,
        "model_path": str(path),
        "reused_cache": reused,
        **_results(s, shares),
    }
    ctx.report.section(
        "Routing trace",
        f"Traced model: {description}: {len(s['layers'])} routed layers, {s['num_experts']} experts, "
        f"top-{s['top_k']} (tracer {s['source']}), over {s['documents']} test documents ({s['tokens']:,} tokens, "
        f"at most {budget.max_tokens} per document) from {len(shares)} domains. The full routing report (every "
        "layer, load balance, token colouring) is one command away:",
    )
    ctx.report.code(f"lmbricks trace {path} " + " ".join(f"--domain {d}" for d in shares))
    ctx.report.table(_table(s, topic), ["measure", "measured", "random router"])
    _figures(ctx, s, shares, layer, topic)
    ctx.report.text(_routing_sentence(s, shares, layer))
    if topic is not None:
        ctx.report.text(_topic_sentence(topic))
    return _summary_rows(s, topic)


def _results(s: dict[str, Any], shares: dict[str, list[float]]) -> dict[str, Any]:
    """The numbers the section leaves in ``ctx.results["trace"]`` (beside the model's description)."""
    cons = s["consecutive"]
    return {
        "source": s["source"],
        "layers": s["layers"],
        "num_experts": int(s["num_experts"]),
        "top_k": int(s["top_k"]),
        "documents": s["documents"],
        "tokens": s["tokens"],
        "heatmap_layer": int(s["colour_layer"]),
        "heatmap": shares,
        "random_baselines": s["random_baselines"],
        "consecutive": [{x: c[x] for x in ("layer", "same_top1", "topk_overlap", "pairs")} for c in cons],
        "same_top1_mean": figures.mean_rate(cons, "same_top1"),
        "topk_overlap_mean": figures.mean_rate(cons, "topk_overlap"),
        "topic": s["topic"],
    }


def _table(s: dict[str, Any], topic: figures.TopicView | None) -> list[list[Any]]:
    """Consecutive-token rates against the random router, then the topic accuracies."""
    cons, rb, k = s["consecutive"], s["random_baselines"], s["top_k"]
    same, overlap = (_pct(figures.mean_rate(cons, key)) for key in ("same_top1", "topk_overlap"))
    rows: list[list[Any]] = [
        ["same top-1 expert, consecutive tokens (mean over layers)", same, _pct(rb["same_top1"])],
        [f"top-{k} sets overlap, consecutive tokens (mean over layers)", overlap, _pct(rb["topk_overlap"])],
    ]
    if topic is None:
        return rows
    for name in ("all layers", "bag of words", "majority class"):
        row = topic.by[name]
        what = f"domain from {name} (SVM, {row['folds']}-fold CV)" if name != "majority class" else None
        rows.append([what or "domain: majority-class baseline", f"{_pct(row['accuracy'])} ± {_pct(row['stderr'])}", ""])
    if topic.best is not None:
        rows.append([f"domain from the best single layer ({topic.best['features']})", _pct(topic.best["accuracy"]), ""])
    return rows


def _figures(
    ctx: TourContext, s: dict[str, Any], shares: dict[str, list[float]], layer: int, topic: figures.TopicView | None
) -> None:
    """The heatmap at ``layer``, the consecutive-token curves and the topic bars."""
    e, k = int(s["num_experts"]), int(s["top_k"])
    title = f"Layer {layer}: share of each domain's routing per expert"
    png = figures.expert_heatmap(ctx.out_dir / "trace_heatmap.png", shares, title)
    spread = figures.largest_spread(list(shares.values()))
    ctx.report.figure(
        png,
        f"Expert selection by domain at layer {layer} (rows sum to 1; uniform share {1 / e:.1%}). "
        f"The largest gap between two domains in one expert's share is {spread:.1%}.",
    )
    title = "Consecutive tokens routed alike"
    png = figures.consecutive_chart(
        ctx.out_dir / "trace_consecutive.png", s["consecutive"], k, s["random_baselines"], title
    )
    ctx.report.figure(png, "Rate at which token t+1 is routed like token t, per layer, against a random router.")
    if topic is not None:
        png = figures.topic_chart(ctx.out_dir / "trace_topic.png", topic, "Domain from routing (cross-validated)")
        ctx.report.figure(png, "Linear SVM on per-document routing histograms, beside two baselines.")


def _routing_sentence(s: dict[str, Any], shares: dict[str, list[float]], layer: int) -> str:
    """Consecutive tokens against the random router, and how distinct the domains' favourite experts are."""
    cons, r1 = s["consecutive"], s["random_baselines"]["same_top1"]
    mean1 = figures.mean_rate(cons, "same_top1")
    top_layer = max(cons, key=lambda c: c["same_top1"])
    distinct = len({v.index(max(v)) for v in shares.values()})  # the domains' most used experts
    return (
        f"Consecutive tokens keep the same first expert {_pct(mean1)} of the time against {_pct(r1)} for a random "
        f"router ({mean1 / r1:.1f}x), most at layer {top_layer['layer']} ({_pct(top_layer['same_top1'])}); "
        f"at layer {layer} the {len(shares)} domains' most used experts are {distinct} distinct expert"
        f"{'s' if distinct != 1 else ''}, with shares differing by up to "
        f"{figures.largest_spread(list(shares.values())):.1%} between domains."
    )


def _topic_sentence(topic: figures.TopicView) -> str:
    """How the routing SVM compares with the majority class and bag of words (a margin of two s.e.)."""
    acc, bow, maj = (topic.accuracy(n) for n in ("all layers", "bag of words", "majority class"))
    margin = 2 * max(topic.by["all layers"]["stderr"], topic.by["bag of words"]["stderr"], 0.01)
    if acc - maj <= margin:
        verdict = "so routing, as traced here, carries no usable domain signal"
    elif acc - bow > margin:
        verdict = f"{acc - bow:.0%} better than bag of words ({_pct(bow)}): routing carries domain information"
        verdict += " beyond the vocabulary"
    elif bow - acc > margin:
        verdict = f"{bow - acc:.0%} below bag of words ({_pct(bow)}): the words alone separate the domains better"
    else:
        verdict = f"within noise of bag of words ({_pct(bow)}): routing separates domains as well as the words do"
    best = topic.best
    return (
        f"From routing alone a linear SVM names a document's domain {_pct(acc)} of the time, "
        f"{acc - maj:+.0%} over the majority class ({_pct(maj)}), {verdict}"
        + (f"; the best single layer is {best['features']} ({_pct(best['accuracy'])})." if best else ".")
    )


def _summary_rows(s: dict[str, Any], topic: figures.TopicView | None) -> list[SummaryRow]:
    mean1, r1 = figures.mean_rate(s["consecutive"], "same_top1"), s["random_baselines"]["same_top1"]
    out: list[SummaryRow] = [("routing trace", "same top-1, consecutive tokens", f"{_pct(mean1)} (random {_pct(r1)})")]
    if topic is not None:
        out.append(
            (
                "routing trace",
                "domain from routing (SVM)",
                f"{_pct(topic.accuracy('all layers'))} (bag of words {_pct(topic.accuracy('bag of words'))}, "
                f"majority {_pct(topic.accuracy('majority class'))})",
            )
        )
    return out
