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

from lmbricks.eval import DEFAULT_DOMAINS
from lmbricks.report import bar_chart, heatmap, line_chart
from lmbricks.tour.run import SummaryRow, TourContext

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


def layer_shares(histograms: Mapping[str, Sequence[Sequence[float]]], position: int) -> dict[str, list[float]]:
    """``{domain: share of its (token, slot) pairs per expert}`` at one traced layer (rows sum to 1)."""
    out = {}
    for domain, counts in histograms.items():
        row = [float(c) for c in counts[position]]
        total = sum(row) or 1.0
        out[domain] = [c / total for c in row]
    return out


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
    from lmbricks.trace import trace_model

    budget = budget or TraceBudget.for_mode(ctx.quick)
    model, tok, path, description, reused = routed_model(ctx)
    result = trace_model(
        model,
        domains=() if texts is not None else DEFAULT_DOMAINS,
        texts=texts,
        tokenizer=tok,
        docs_per_domain=budget.docs_per_domain,
        max_tokens=budget.max_tokens,
        min_tokens=budget.min_tokens,
        folds=budget.folds,
    )
    s = result.summary
    layers: list[int] = s["layers"]
    e, k = int(s["num_experts"]), int(s["top_k"])
    layer = int(s["colour_layer"])  # the middle routed layer
    shares = layer_shares(s["histograms"], layers.index(layer))
    domains = [d for d in shares if d != "all"]
    cons = s["consecutive"]
    r1, rk = s["random_baselines"]["same_top1"], s["random_baselines"]["topk_overlap"]
    mean1 = sum(c["same_top1"] for c in cons) / len(cons)
    meank = sum(c["topk_overlap"] for c in cons) / len(cons)
    top_layer = max(cons, key=lambda c: c["same_top1"])
    topic = {r["features"]: r for r in s["topic"]} if s["topic"] else {}
    per_layer = [r for name, r in topic.items() if name.startswith("layer ")]
    best = max(per_layer, key=lambda r: r["accuracy"]) if per_layer else None

    ctx.results["trace"] = {
        "model": description,
        "model_path": str(path),
        "reused_cache": reused,
        "source": s["source"],
        "layers": layers,
        "num_experts": e,
        "top_k": k,
        "documents": s["documents"],
        "tokens": s["tokens"],
        "heatmap_layer": layer,
        "heatmap": {d: shares[d] for d in domains},
        "random_baselines": s["random_baselines"],
        "consecutive": [{x: c[x] for x in ("layer", "same_top1", "topk_overlap", "pairs")} for c in cons],
        "same_top1_mean": mean1,
        "topk_overlap_mean": meank,
        "topic": s["topic"],
    }

    ctx.report.section(
        "Routing trace",
        f"Traced model: {description}: {len(layers)} routed layers, {e} experts, top-{k} "
        f"(tracer {s['source']}), over {s['documents']} test documents ({s['tokens']:,} tokens, at most "
        f"{budget.max_tokens} per document) from {len(domains)} domains. The full routing report (every layer, "
        "load balance, token colouring) is one command away:",
    )
    ctx.report.code(f"lmbricks trace {path} " + " ".join(f"--domain {d}" for d in domains))
    rows: list[list[Any]] = [
        ["same top-1 expert, consecutive tokens (mean over layers)", _pct(mean1), _pct(r1)],
        [f"top-{k} sets overlap, consecutive tokens (mean over layers)", _pct(meank), _pct(rk)],
    ]
    if topic:
        for name in ("all layers", "bag of words", "majority class"):
            rows.append(
                [
                    f"domain from {name} (SVM, {topic[name]['folds']}-fold CV)"
                    if name != "majority class"
                    else "domain: majority-class baseline",
                    f"{_pct(topic[name]['accuracy'])} ± {_pct(topic[name]['stderr'])}",
                    "",
                ]
            )
        if best is not None:
            rows.append([f"domain from the best single layer ({best['features']})", _pct(best["accuracy"]), ""])
    ctx.report.table(rows, ["measure", "measured", "random router"])

    png = heatmap(
        ctx.out_dir / "trace_heatmap.png",
        [shares[d] for d in domains],
        rows=domains,
        cols=[f"e{j}" for j in range(e)],
        title=f"Layer {layer}: share of each domain's routing per expert",
        annotate=e <= 16,
    )
    spread = max(max(col) - min(col) for col in zip(*(shares[d] for d in domains), strict=True))
    favourite = {d: shares[d].index(max(shares[d])) for d in domains}  # each domain's most used expert
    ctx.report.figure(
        png,
        f"Expert selection by domain at layer {layer} (rows sum to 1; uniform share {1 / e:.1%}). "
        f"The largest gap between two domains in one expert's share is {spread:.1%}.",
    )
    xs = [c["layer"] for c in cons]
    png = line_chart(
        ctx.out_dir / "trace_consecutive.png",
        {
            "same top-1": (xs, [c["same_top1"] for c in cons]),
            f"top-{k} overlap": (xs, [c["topk_overlap"] for c in cons]),
            "random top-1": (xs, [r1] * len(xs)),
            f"random top-{k} overlap": (xs, [rk] * len(xs)),
        },
        "Consecutive tokens routed alike",
        "layer",
        "rate",
    )
    ctx.report.figure(png, "Rate at which token t+1 is routed like token t, per layer, against a random router.")
    if topic:
        bars = {name: topic[name]["accuracy"] for name in ("majority class", "bag of words", "all layers")}
        if best is not None:
            bars[f"best: {best['features']}"] = best["accuracy"]
        png = bar_chart(ctx.out_dir / "trace_topic.png", bars, "Domain from routing (cross-validated)", "accuracy")
        ctx.report.figure(png, "Linear SVM on per-document routing histograms, beside two baselines.")

    distinct = len(set(favourite.values()))
    ctx.report.text(
        f"Consecutive tokens keep the same first expert {_pct(mean1)} of the time against {_pct(r1)} for a random "
        f"router ({mean1 / r1:.1f}x), most at layer {top_layer['layer']} ({_pct(top_layer['same_top1'])}); "
        f"at layer {layer} the {len(domains)} domains' most used experts are {distinct} distinct expert"
        f"{'s' if distinct != 1 else ''}, with shares differing by up to {spread:.1%} between domains."
    )
    if topic:
        acc, bow, maj = (topic[n]["accuracy"] for n in ("all layers", "bag of words", "majority class"))
        margin = 2 * max(topic["all layers"]["stderr"], topic["bag of words"]["stderr"], 0.01)
        if acc - maj <= margin:
            verdict = "so routing, as traced here, carries no usable domain signal"
        elif acc - bow > margin:
            verdict = f"{acc - bow:.0%} better than bag of words ({_pct(bow)}): routing carries domain information"
            verdict += " beyond the vocabulary"
        elif bow - acc > margin:
            verdict = f"{bow - acc:.0%} below bag of words ({_pct(bow)}): the words alone separate the domains better"
        else:
            verdict = f"within noise of bag of words ({_pct(bow)}): routing separates domains as well as the words do"
        ctx.report.text(
            f"From routing alone a linear SVM names a document's domain {_pct(acc)} of the time, "
            f"{acc - maj:+.0%} over the majority class ({_pct(maj)}), {verdict}"
            + (f"; the best single layer is {best['features']} ({_pct(best['accuracy'])})." if best else ".")
        )
    out: list[SummaryRow] = [("routing trace", "same top-1, consecutive tokens", f"{_pct(mean1)} (random {_pct(r1)})")]
    if topic:
        out.append(
            (
                "routing trace",
                "domain from routing (SVM)",
                f"{_pct(topic['all layers']['accuracy'])} (bag of words {_pct(topic['bag of words']['accuracy'])}, "
                f"majority {_pct(topic['majority class']['accuracy'])})",
            )
        )
    return out
