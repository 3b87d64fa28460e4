"""The routing report: one HTML page with heatmaps, load, consecutive tokens, token colouring and topic SVM.

Every sentence of interpretation is computed from the numbers of :func:`lmbricks.trace.summary.summarise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmbricks.report import Report, bar_chart, heatmap, line_chart
from lmbricks.trace.colour import coloured_tokens_html, token_pieces
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


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"


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
    e, k = trace.num_experts, trace.top_k
    cons = summary["consecutive"]
    topic = summary["topic"]
    rep = Report(
        f"Routing trace: {model_name}",
        f"{summary['documents']} documents, {summary['tokens']:,} tokens, {len(layers)} routed layers, "
        f"{e} experts, top-{k} (tracer: {summary['source']}).",
    )
    rows: list[list[Any]] = [["routed layers", len(layers)], ["experts / top-k", f"{e} / {k}"]]
    mean1 = sum(c["same_top1"] for c in cons) / len(cons)
    rows.append(
        [
            "same top-1 expert, consecutive tokens (mean over layers)",
            f"{_fmt_pct(mean1)} (random {_fmt_pct(cons[0]['random_top1'])})",
        ]
    )
    if topic:
        by = {r["features"]: r for r in topic}
        rows.append(["topic SVM, all layers", _fmt_pct(by["all layers"]["accuracy"])])
        rows.append(["bag-of-words baseline", _fmt_pct(by["bag of words"]["accuracy"])])
        rows.append(["majority-class baseline", _fmt_pct(by["majority class"]["accuracy"])])
    rep.summary(rows, ["measure", "value"])

    # ---- histograms
    rep.section(
        "Expert selection by domain",
        f"Share of each domain's (token, slot) pairs sent to each expert; each row sums to 1 "
        f"(k = {k} slots per token).",
    )
    domains = trace.domains
    for layer in report_layers(layers, colour_layer):
        i = layers.index(layer)
        matrix = []
        for d in domains:
            row = summary["histograms"][d][i]
            total = sum(row) or 1
            matrix.append([c / total for c in row])
        png = heatmap(
            figures / f"heatmap_layer{layer}.png",
            matrix,
            rows=domains,
            cols=[f"e{j}" for j in range(e)],
            title=f"Layer {layer}: expert share by domain",
            annotate=e <= 16,
        )
        spread = max(max(col) - min(col) for col in zip(*matrix, strict=True)) if len(matrix) > 1 else 0.0
        rep.figure(
            png,
            f"Layer {layer}. The largest difference between domains in one expert's share is "
            f"{_fmt_pct(spread)} (uniform share {_fmt_pct(1 / e)}).",
        )
    load = summary["load"]
    png = line_chart(
        figures / "load.png",
        {
            "normalised entropy": ([x["layer"] for x in load], [x["normalised_entropy"] for x in load]),
            "max / mean load": ([x["layer"] for x in load], [x["max_over_mean"] for x in load]),
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

    # ---- consecutive tokens
    r1, rk = cons[0]["random_top1"], cons[0]["random_overlap"]
    above1 = sum(1 for c in cons if c["same_top1"] - 2 * c["same_top1_stderr"] > r1)
    rep.section(
        "Consecutive tokens",
        f"How often token t+1 is routed like token t (Mixtral paper, s5). Random routers give "
        f"{_fmt_pct(r1)} for the same first choice and {_fmt_pct(rk)} for overlapping top-{k} sets. "
        f"{above1} of {len(cons)} layers are above the random first-choice rate by more than two "
        "standard errors.",
    )
    xs = [c["layer"] for c in cons]
    png = line_chart(
        figures / "consecutive.png",
        {
            "same top-1": (xs, [c["same_top1"] for c in cons]),
            f"top-{k} overlap": (xs, [c["topk_overlap"] for c in cons]),
            "random top-1": (xs, [r1] * len(xs)),
            f"random top-{k} overlap": (xs, [rk] * len(xs)),
        },
        "Consecutive-token routing",
        "layer",
        "rate",
    )
    rep.figure(png, f"Mean over layers: same top-1 {_fmt_pct(mean1)} against {_fmt_pct(r1)} at random.")
    rep.table(
        [
            [
                c["layer"],
                c["same_top1"],
                c["same_top1_stderr"],
                c["topk_overlap"],
                c["topk_overlap_stderr"],
                c["pairs"],
            ]
            for c in cons
        ],
        ["layer", "same top-1", "± s.e.", f"top-{k} overlap", "± s.e.", "pairs"],
    )
    by_domain = summary["consecutive_by_domain"]
    i = layers.index(colour_layer)
    rep.table(
        [[d, by_domain[d][i]["same_top1"], by_domain[d][i]["topk_overlap"], by_domain[d][i]["pairs"]] for d in domains],
        ["domain", "same top-1", f"top-{k} overlap", "pairs"],
        caption=f"By domain at layer {colour_layer}",
    )

    # ---- token colouring
    rep.section(
        "Token colouring",
        f"Each token's background is its first-choice expert at layer {colour_layer}; "
        f"hover for all {k} choices and weights.",
    )
    rep.raw_html(colour_section_html(trace, tokenizer, colour_layer))

    # ---- topic
    if topic:
        by = {r["features"]: r for r in topic}
        layer_rows = [r for r in topic if r["features"].startswith("layer ")]
        best = max(layer_rows, key=lambda r: r["accuracy"]) if layer_rows else by["all layers"]
        gain = by["all layers"]["accuracy"] - by["majority class"]["accuracy"]
        vs_bow = by["all layers"]["accuracy"] - by["bag of words"]["accuracy"]
        rep.section(
            "Topic from routing",
            "A linear SVM on standardised per-document routing histograms, "
            f"{topic[0]['folds']}-fold stratified "
            f"cross-validation over {len(domains)} domains. All layers together reach "
            f"{_fmt_pct(by['all layers']['accuracy'])}, {100 * gain:+.1f} points over the majority class and "
            f"{100 * vs_bow:+.1f} points against bag of words; the best single layer is {best['features']} "
            f"({_fmt_pct(best['accuracy'])}).",
        )
        bars = {name: by[name]["accuracy"] for name in ("majority class", "bag of words", "all layers")}
        bars[f"best: {best['features']}"] = best["accuracy"]
        png = bar_chart(figures / "topic.png", bars, "Domain classification accuracy (cross-validated)", "accuracy")
        rep.figure(png, "Majority class and bag of words are the baselines; the other bars use routing only.")
        if len(layer_rows) > 1:
            xs = [int(r["features"].split()[1]) for r in layer_rows]
            png = line_chart(
                figures / "topic_layers.png",
                {
                    "routing, one layer": (xs, [r["accuracy"] for r in layer_rows]),
                    "routing, all layers": (xs, [by["all layers"]["accuracy"]] * len(xs)),
                    "bag of words": (xs, [by["bag of words"]["accuracy"]] * len(xs)),
                    "majority class": (xs, [by["majority class"]["accuracy"]] * len(xs)),
                },
                "Domain classification accuracy by layer",
                "layer",
                "accuracy",
            )
            rep.figure(
                png,
                f"Per-layer accuracy ranges from {_fmt_pct(min(r['accuracy'] for r in layer_rows))} "
                f"to {_fmt_pct(best['accuracy'])}.",
            )
        rep.table(
            [[r["features"], r["accuracy"], r["stderr"], r["folds"]] for r in topic],
            ["features", "accuracy", "± s.e.", "folds"],
        )
    return rep
