"""The routing report: one HTML page with heatmaps, load, consecutive tokens, token colouring and topic SVM.

Every sentence of interpretation is computed from the numbers of :func:`lmbricks.trace.summary.summarise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmbricks.report import Report, line_chart
from lmbricks.trace.colour import coloured_tokens_html, token_pieces
from lmbricks.trace.figures import (
    TopicView,
    consecutive_chart,
    expert_heatmap,
    largest_spread,
    layer_shares,
    mean_rate,
    pct,
    topic_chart,
)
from lmbricks.trace.types import RoutingTrace


def report_layers(layers: Sequence[int], chosen: int | None, limit: int = 4) -> list[int]:
    """The layers that get a heatmap: first, ``chosen`` (default the middle one) and last, deduplicated."""
    if not layers:
        return []
    mid = layers[len(layers) // 2] if chosen is None else chosen
    picks = [layers[0], mid, layers[-1]]
    return sorted(dict.fromkeys(picks))[:limit]


def colour_section_html(
    trace: RoutingTrace, tokenizer: Any, layer: int, docs_per_domain: int = 1, max_tokens: int = 160
) -> str:
    """Coloured tokens of the first ``docs_per_domain`` documents of every domain at ``layer``."""
    pos = trace.layer_position(layer)
    top1 = trace.top1()[pos]  # (N,)
    offsets = trace.doc_offsets()
    parts = []
    shown: dict[str, int] = {}
    for d, domain in enumerate(trace.doc_domains):
        if shown.get(domain, 0) >= docs_per_domain:
            continue
        shown[domain] = shown.get(domain, 0) + 1
        lo, hi = int(offsets[d]), min(int(offsets[d + 1]), int(offsets[d]) + max_tokens)
        ids = trace.token_ids[lo:hi].tolist()
        pieces = token_pieces(tokenizer, ids) if tokenizer is not None else [f"[{i}]" for i in ids]
        details = [
            ", ".join(
                f"expert {int(e)} ({float(w):.2f})"
                for e, w in zip(trace.indices[pos, t], trace.weights[pos, t], strict=True)
                if int(e) >= 0
            )
            or "not routed"
            for t in range(lo, hi)
        ]
        parts.append(
            coloured_tokens_html(
                pieces, top1[lo:hi].tolist(), trace.num_experts, details, caption=f"{domain} (document {d})"
            )
        )
    return "".join(parts)


def build_report(
    trace: RoutingTrace,
    summary: dict[str, Any],
    figures: Path,
    model_name: str,
    tokenizer: Any = None,
    colour_layer: int | None = None,
) -> Report:
    """Assemble the routing report (PNG figures are written into ``figures``).

    Args:
        trace: the captured routing.
        summary: :func:`~lmbricks.trace.summary.summarise` of ``trace``.
        figures: folder for the PNG files (created).
        model_name: shown in the title.
        tokenizer: turns token ids back into text for the colouring (ids are shown without one).
        colour_layer: layer for the token colouring and the middle heatmap (default: middle layer).

    Returns:
        The Report, ready to ``save``.
    """
    figures.mkdir(parents=True, exist_ok=True)
    layers = trace.layers
    colour_layer = layers[len(layers) // 2] if colour_layer is None else colour_layer
    trace.layer_position(colour_layer)  # fail early on an untraced layer
    topic = TopicView.of(summary["topic"]) if summary["topic"] else None
    rep = Report(
        f"Routing trace: {model_name}",
        f"{summary['documents']} documents, {summary['tokens']:,} tokens, {len(layers)} routed layers, "
        f"{trace.num_experts} experts, top-{trace.top_k} (tracer: {summary['source']}).",
    )
    rep.summary(summary_rows(trace, summary, topic), ["measure", "value"])
    add_histograms(rep, trace, summary, figures, colour_layer)
    add_load(rep, summary["load"], figures)
    add_consecutive(rep, trace, summary, figures, colour_layer)
    rep.section(
        "Token colouring",
        f"Each token's background is its first-choice expert at layer {colour_layer}; "
        f"hover for all {trace.top_k} choices and weights.",
    )
    rep.raw_html(colour_section_html(trace, tokenizer, colour_layer))
    if topic is not None:
        add_topic(rep, summary["topic"], topic, len(trace.domains), figures)
    return rep


def summary_rows(trace: RoutingTrace, summary: dict[str, Any], topic: TopicView | None) -> list[list[Any]]:
    """The report's headline table: layers, experts, consecutive top-1 rate and the topic accuracies."""
    cons = summary["consecutive"]
    rows: list[list[Any]] = [
        ["routed layers", len(trace.layers)],
        ["experts / top-k", f"{trace.num_experts} / {trace.top_k}"],
        [
            "same top-1 expert, consecutive tokens (mean over layers)",
            f"{pct(mean_rate(cons, 'same_top1'))} (random {pct(cons[0]['random_top1'])})",
        ],
    ]
    if topic is not None:
        rows.append(["topic SVM, all layers", pct(topic.accuracy("all layers"))])
        rows.append(["bag-of-words baseline", pct(topic.accuracy("bag of words"))])
        rows.append(["majority-class baseline", pct(topic.accuracy("majority class"))])
    return rows


def add_histograms(rep: Report, trace: RoutingTrace, summary: dict[str, Any], figures: Path, chosen: int) -> None:
    """One heatmap (domains x experts) per layer of :func:`report_layers`, with the largest domain gap."""
    e, k = trace.num_experts, trace.top_k
    rep.section(
        "Expert selection by domain",
        f"Share of each domain's (token, slot) pairs sent to each expert; each row sums to 1 "
        f"(k = {k} slots per token).",
    )
    hists = {d: summary["histograms"][d] for d in trace.domains}
    for layer in report_layers(trace.layers, chosen):
        shares = layer_shares(hists, trace.layers.index(layer))
        png = expert_heatmap(figures / f"heatmap_layer{layer}.png", shares, f"Layer {layer}: expert share by domain")
        rep.figure(
            png,
            f"Layer {layer}. The largest difference between domains in one expert's share is "
            f"{pct(largest_spread(list(shares.values())))} (uniform share {pct(1 / e)}).",
        )


def add_load(rep: Report, load: list[dict[str, Any]], figures: Path) -> None:
    """The load-balance curves per layer and their table."""
    xs = [x["layer"] for x in load]
    png = line_chart(
        figures / "load.png",
        {
            "normalised entropy": (xs, [x["normalised_entropy"] for x in load]),
            "max / mean load": (xs, [x["max_over_mean"] for x in load]),
        },
        "Expert load per layer (all domains)",
        "layer",
        "value",
    )
    worst = max(load, key=lambda x: x["max_over_mean"])
    rep.figure(
        png,
        f"Load balance: 1 is perfect for both curves. The most loaded expert is "
        f"{worst['max_over_mean']:.2f}x the mean at layer {worst['layer']}.",
    )
    rep.table(
        [[x["layer"], x["entropy"], x["normalised_entropy"], x["max_over_mean"]] for x in load],
        ["layer", "entropy (nats)", "entropy / log E", "max / mean load"],
    )


def add_consecutive(rep: Report, trace: RoutingTrace, summary: dict[str, Any], figures: Path, chosen: int) -> None:
    """Consecutive-token routing against the random baselines: per layer, and by domain at ``chosen``."""
    cons, k = summary["consecutive"], trace.top_k
    r1, rk = cons[0]["random_top1"], cons[0]["random_overlap"]
    above1 = sum(1 for c in cons if c["same_top1"] - 2 * c["same_top1_stderr"] > r1)
    rep.section(
        "Consecutive tokens",
        f"How often token t+1 is routed like token t (Mixtral paper, s5). Random routers give "
        f"{pct(r1)} for the same first choice and {pct(rk)} for overlapping top-{k} sets. "
        f"{above1} of {len(cons)} layers are above the random first-choice rate by more than two "
        "standard errors.",
    )
    png = consecutive_chart(
        figures / "consecutive.png", cons, k, summary["random_baselines"], "Consecutive-token routing"
    )
    rep.figure(png, f"Mean over layers: same top-1 {pct(mean_rate(cons, 'same_top1'))} against {pct(r1)} at random.")
    fields = ("layer", "same_top1", "same_top1_stderr", "topk_overlap", "topk_overlap_stderr", "pairs")
    rep.table(
        [[c[f] for f in fields] for c in cons],
        ["layer", "same top-1", "± s.e.", f"top-{k} overlap", "± s.e.", "pairs"],
    )
    at = {d: rows[trace.layers.index(chosen)] for d, rows in summary["consecutive_by_domain"].items()}
    rep.table(
        [[d, at[d]["same_top1"], at[d]["topk_overlap"], at[d]["pairs"]] for d in trace.domains],
        ["domain", "same top-1", f"top-{k} overlap", "pairs"],
        caption=f"By domain at layer {chosen}",
    )


def add_topic(rep: Report, rows: list[dict[str, Any]], topic: TopicView, n_domains: int, figures: Path) -> None:
    """The topic classifier against its baselines: a sentence, the bars, the per-layer curve and the table."""
    best = topic.best or topic.by["all layers"]
    acc = topic.accuracy("all layers")
    rep.section(
        "Topic from routing",
        "A linear SVM on standardised per-document routing histograms, "
        f"{rows[0]['folds']}-fold stratified "
        f"cross-validation over {n_domains} domains. All layers together reach "
        f"{pct(acc)}, {100 * (acc - topic.accuracy('majority class')):+.1f} points over the majority class and "
        f"{100 * (acc - topic.accuracy('bag of words')):+.1f} points against bag of words; the best single layer "
        f"is {best['features']} ({pct(best['accuracy'])}).",
    )
    png = topic_chart(figures / "topic.png", topic, "Domain classification accuracy (cross-validated)")
    rep.figure(png, "Majority class and bag of words are the baselines; the other bars use routing only.")
    if len(topic.layers) > 1:
        xs = [int(r["features"].split()[1]) for r in topic.layers]
        flat = {
            name: (xs, [topic.accuracy(name)] * len(xs)) for name in ("all layers", "bag of words", "majority class")
        }
        png = line_chart(
            figures / "topic_layers.png",
            {
                "routing, one layer": (xs, [r["accuracy"] for r in topic.layers]),
                "routing, all layers": flat["all layers"],
                "bag of words": flat["bag of words"],
                "majority class": flat["majority class"],
            },
            "Domain classification accuracy by layer",
            "layer",
            "accuracy",
        )
        rep.figure(
            png,
            f"Per-layer accuracy ranges from {pct(min(r['accuracy'] for r in topic.layers))} "
            f"to {pct(best['accuracy'])}.",
        )
    rep.table(
        [[r["features"], r["accuracy"], r["stderr"], r["folds"]] for r in rows],
        ["features", "accuracy", "± s.e.", "folds"],
    )
