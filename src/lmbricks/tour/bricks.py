"""Tour section: the shipped LoRA bricks: their effect per domain, routing between them, a LoraHub mix.

Everything is measured live on the default model: held-out perplexity of the base and of the base
with each brick on every domain (``ctx.eval_bytes`` per domain), routing of a few held-out texts
per domain by the nearest domain centroid (centroids come from the centroid cache after the first
run), and one LoraHub search of per-brick weights on a few examples of one domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmbricks.tour.run import SkipSection, SummaryRow, TourContext

#: The domain whose few-shot examples drive the LoraHub search (the first one present among the bricks).
LORAHUB_DOMAINS = ("math", "dialogue", "zh", "code")


def _settings(quick: bool) -> dict[str, int]:
    """Budgets: routing documents and their length, centroid tokens, LoraHub examples and evaluations.

    The model costs about 2-4 ms of CPU per token, so every budget here is counted in tokens: quick
    mode scores about 10k tokens, full mode about 28k (plus the centroids on a first run), most of
    them in the effect table (5 models x 4 domains x ``ctx.eval_bytes``).
    """
    if quick:
        return {"route_docs": 2, "route_tokens": 128, "centroid_tokens": 512, "examples": 2, "ex_tokens": 48,
                "budget": 6}  # fmt: skip
    return {"route_docs": 3, "route_tokens": 128, "centroid_tokens": 1024, "examples": 3, "ex_tokens": 64,
            "budget": 8}  # fmt: skip


def table_domains(brick_domains: Sequence[str], all_domains: bool = True) -> list[str]:
    """Columns of the effect table: the bricks' domains, plus (``all_domains``) the other cached standard ones."""
    from lmbricks.data.store import read_manifest
    from lmbricks.eval import DEFAULT_DOMAINS

    cols = [d for d in DEFAULT_DOMAINS if d in brick_domains or (all_domains and read_manifest(d) is not None)]
    return cols + [d for d in brick_domains if d not in cols]


def effect_table(slot: Any, tokenizer: Any, bricks: Mapping[str, Any], domains: Sequence[str], max_bytes: int) -> dict:
    """Held-out perplexity ``{row: {domain: ppl}}`` of the base (row ``base``) and the base with each brick.

    Args:
        slot: an :class:`~lmbricks.adapters.hub_adapter.AdapterSlot` around the base model.
        tokenizer: its tokenizer.
        bricks: ``{name: factors}``.
        domains: evaluation domains (test split, first ``max_bytes`` bytes each).
    """
    from lmbricks.eval import evaluate_domains

    rows: dict[str, dict[str, float]] = {}
    for name in ["base", *bricks]:
        if name == "base":
            slot.clear()
        else:
            slot.set(bricks[name])
        rows[name] = {
            d: r.ppl for d, r in evaluate_domains(slot.model, tokenizer, domains, max_bytes=max_bytes).items()
        }
    slot.clear()
    return rows


def _change(rows: Mapping[str, Mapping[str, float]], name: str, domain: str) -> float:
    return rows[name][domain] / rows["base"][domain] - 1.0


def _report_effects(ctx: TourContext, rows: dict[str, dict[str, float]], domains: list[str], domain_of: dict) -> str:
    from lmbricks.report import heatmap

    names = [n for n in rows if n != "base"]
    ctx.report.table(
        [["base", *[f"{rows['base'][d]:.3f}" for d in domains]]]
        + [[f"+{n}", *[f"{rows[n][d]:.3f} ({100 * _change(rows, n, d):+.1f}%)" for d in domains]] for n in names],
        ["model", *domains],
        caption=f"Held-out perplexity, first {ctx.eval_bytes:,} bytes of each domain's test split (the "
        "repository's bricks/<model>/TABLE.md has the same table on 12 KB per domain, English prose included).",
    )
    png = heatmap(
        ctx.out_dir / "bricks_effect.png",
        [[100 * _change(rows, n, d) for d in domains] for n in names],
        [f"+{n}" for n in names],
        domains,
        "Perplexity change vs the base (%)",
        fmt="{:+.1f}",
    )
    ctx.report.figure(png, "Rows: the base plus one brick; columns: the evaluated domain; negative is better.")
    own = {n: _change(rows, n, domain_of[n]) for n in names if domain_of.get(n) in domains}
    off = [_change(rows, n, d) for n in names for d in domains if d != domain_of.get(n)]
    best, worst = min(own, key=lambda n: own[n]), max(own, key=lambda n: own[n])
    helped = sum(v < 0 for v in own.values())
    text = (
        f"{helped} of {len(own)} bricks lower their own domain's perplexity on this short held-out text, from "
        f"{100 * own[worst]:+.1f}% ({worst}) to {100 * own[best]:+.1f}% ({best})"
    )
    if not off:
        return text + "."
    smaller = max(abs(v) for v in off) < max(abs(v) for v in own.values())
    return text + (
        f"; on the other domains the changes range from {100 * min(off):+.1f}% to {100 * max(off):+.1f}% (mean "
        f"{100 * sum(off) / len(off):+.1f}%), {'smaller' if smaller else 'not smaller'} than the largest in-domain "
        "effect."
    )


def bricks_section(ctx: TourContext) -> list[SummaryRow]:
    """Effect table of the shipped bricks, routing accuracy between them, and one LoraHub composition."""
    import time

    from lmbricks.adapters.catalogue import list_bricks
    from lmbricks.adapters.centroids import CentroidStats
    from lmbricks.adapters.hub_adapter import AdapterSlot
    from lmbricks.adapters.centroids import brick_router
    from lmbricks.adapters.routing_eval import evaluate_routing
    from lmbricks.adapters.session import BrickSet, load_bricks
    from lmbricks.data import load_texts
    from lmbricks.hub import load_hf_model

    ctx.report.section(
        "Customized bricks",
        "LoRA bricks trained per domain (scripts/train_bricks.py) and plugged into the base model: what each "
        "does to every domain, whether a router finds the right one, and a LoraHub mix of all of them.",
    )
    train = "train one with `lmbricks adapters train MODEL OUT --domain D` and plug it in"
    if not list_bricks(ctx.model_ref):  # a model without bricks: nothing to show, and nothing wrong
        ctx.results["bricks"] = {"available": False}
        raise SkipSection(f"no bricks are catalogued for {ctx.model_ref}; {train}")
    # Bricks that are catalogued but refused (trained on another base: the hash differs) are a failure:
    # load_bricks raises, and the tour reports the refusal instead of an effect table.
    bset = load_bricks(ctx.model_ref)
    # Routing and the effect table need each brick's domain: keep the bricks that record one.
    kept = [i for i, info in enumerate(bset.infos) if info.domain]
    if not kept:
        ctx.results["bricks"] = {"available": False}
        raise SkipSection(f"none of the bricks catalogued for {ctx.model_ref} records its domain; {train}")
    bset = BrickSet(bset.base, [bset.infos[i] for i in kept], [bset.factors[i] for i in kept])
    s = _settings(ctx.quick)
    names = bset.names
    domain_of = {n: str(i.domain) for n, i in zip(names, bset.infos, strict=True)}
    factors = dict(zip(names, bset.factors, strict=True))
    model, tokenizer = load_hf_model(bset.base.path)
    slot = AdapterSlot(model, bset.rank, bset.modules)  # a cleared slot computes exactly the base
    out: dict[str, Any] = {
        "available": True,
        "bricks": {n: str(i.path) for n, i in zip(names, bset.infos, strict=True)},
    }
    timings: dict[str, float] = {}

    # 1. Effect table.
    t0 = time.perf_counter()
    # The bricks' own domains only (time); bricks/<model>/TABLE.md has the 12 KB table with English prose.
    domains = table_domains(list(domain_of.values()), all_domains=False)
    rows = effect_table(slot, tokenizer, factors, domains, ctx.eval_bytes)
    timings["effects"] = time.perf_counter() - t0
    out["effects"] = {"eval_bytes": ctx.eval_bytes, "domains": domains, "ppl": rows}
    ctx.report.text(_report_effects(ctx, rows, domains, domain_of))

    # 2. Routing held-out texts (centroids from the cache when present).
    t0 = time.perf_counter()
    stats = CentroidStats()
    slot.clear()
    router = brick_router(bset, slot.model, tokenizer, max_tokens=s["centroid_tokens"], stats=stats)
    held_out = {d: [t for t in load_texts(d, "test") if t.strip()] for d in domain_of.values()}
    routing = evaluate_routing(
        slot, tokenizer, router, factors, domain_of, held_out, doc_tokens=s["route_tokens"], per_domain=s["route_docs"]
    )
    timings["routing"] = time.perf_counter() - t0
    out["routing"] = routing
    out["routing_settings"] = {"centroid_tokens": s["centroid_tokens"], "doc_tokens": s["route_tokens"],
                               "centroids_cached": stats.hits, "centroids_computed": stats.computed}  # fmt: skip
    _report_routing(ctx, routing, s, stats)

    # 3. LoraHub: weights of every brick searched on a few examples of one domain.
    t0 = time.perf_counter()
    hub = _lorahub(ctx, slot, tokenizer, names, factors, domain_of, rows, s)
    timings["lorahub"] = time.perf_counter() - t0
    out["lorahub"] = hub
    out["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    ctx.results["bricks"] = out
    own = {n: _change(rows, n, d) for n, d in domain_of.items() if d in domains}
    return [("bricks", f"own-domain ppl change ({n})", f"{100 * v:+.1f}%") for n, v in own.items()] + [
        ("bricks", "routing accuracy", f"{routing['all']['accuracy']:.0%} of {routing['all']['docs']}"),
        ("bricks", f"LoraHub on {hub['domain']}", f"ppl {hub['ppl_base']:.2f} -> {hub['ppl_composed']:.2f}"),
    ]


def _report_routing(ctx: TourContext, routing: dict[str, Any], s: Mapping[str, int], stats: Any) -> None:
    from lmbricks.report import bar_chart

    doms = [d for d in routing if d != "all"]
    ctx.report.table(
        [
            [
                d,
                f"{r['accuracy']:.0%} ({r['docs']})",
                f"{r['ppl_none']:.2f}",
                f"{r['ppl_oracle']:.2f}",
                f"{r['ppl_routed']:.2f}",
                ", ".join(f"{k}: {v}" for k, v in r["chosen"].items()),
            ]  # fmt: skip
            for d, r in routing.items()
        ],
        ["held-out domain", "routing accuracy (docs)", "ppl, no brick", "ppl, oracle brick", "ppl, routed", "chosen"],
        caption=f"{s['route_docs']} test documents per domain, first {s['route_tokens']} tokens each; centroids "
        f"over {s['centroid_tokens']} training tokens per brick ({stats.hits} read from the cache, "
        f"{stats.computed} computed).",
    )
    png = bar_chart(
        ctx.out_dir / "bricks_routing.png",
        {d: routing[d]["accuracy"] for d in doms},
        "Routing accuracy on held-out texts",
        "share routed to the domain's brick",
    )
    ctx.report.figure(png, "Nearest domain centroid of the base model's last hidden state.")
    a = routing["all"]
    gain = a["ppl_none"] - a["ppl_oracle"]
    kept = (a["ppl_none"] - a["ppl_routed"]) / gain if gain > 0 else float("nan")
    worst = min(doms, key=lambda d: routing[d]["accuracy"])
    ctx.report.text(
        f"The router sends {a['accuracy']:.0%} of the {a['docs']} held-out texts to their own domain's brick "
        f"(weakest: {worst}, {routing[worst]['accuracy']:.0%}); with the routed bricks the perplexity is "
        f"{a['ppl_routed']:.2f} against {a['ppl_oracle']:.2f} with the oracle brick and {a['ppl_none']:.2f} with none, "
        f"so routing keeps {kept:.0%} of the oracle's gain."
    )


def _lorahub(
    ctx: TourContext,
    slot: Any,
    tokenizer: Any,
    names: list[str],
    factors: Mapping[str, Any],
    domain_of: Mapping[str, str],
    rows: Mapping[str, Mapping[str, float]],
    s: Mapping[str, int],
) -> dict[str, Any]:
    from lmbricks.adapters.lorahub import LoraHubSettings, example_batches, lorahub_search
    from lmbricks.data import load_texts
    from lmbricks.eval import evaluate_domains
    from lmbricks.report import line_chart

    domain = next((d for d in LORAHUB_DOMAINS if d in domain_of.values()), next(iter(domain_of.values())))
    texts = [t for t in load_texts(domain, "validation") if t.strip()][: s["examples"]]
    batches = example_batches(tokenizer, texts, s["ex_tokens"])
    result = lorahub_search(slot, [factors[n] for n in names], batches, LoraHubSettings(budget=s["budget"]))
    # The slot now holds the best combination: score it on the domain's held-out text.
    composed = evaluate_domains(slot.model, tokenizer, [domain], max_bytes=ctx.eval_bytes)[domain].ppl
    slot.clear()
    weights = dict(zip(names, result.weights, strict=True))
    own = next((n for n, d in domain_of.items() if d == domain), None)
    objective = [v for _, v in result.history]
    hub: dict[str, Any] = {
        "domain": domain,
        "examples": len(batches),
        "example_tokens": s["ex_tokens"],
        "budget": s["budget"],
        "weights": weights,
        "objective": objective,
        "loss": result.loss,
        "ppl_base": rows["base"][domain],
        "ppl_composed": composed,
        "ppl_own_brick": rows[own][domain] if own else None,
    }
    best_so_far, curve = float("inf"), []
    for v in objective:
        best_so_far = min(best_so_far, v)
        curve.append(best_so_far)
    xs = list(range(1, len(curve) + 1))
    png = line_chart(
        ctx.out_dir / "bricks_lorahub.png",
        {"evaluated": (xs, objective), "best so far": (xs, curve)},
        f"LoraHub search on {len(batches)} {domain} examples",
        "evaluation",
        "cross-entropy + 0.05 mean|w|",
    )
    ctx.report.table(
        [[n, f"{w:+.3f}"] for n, w in weights.items()],
        ["brick", "LoraHub weight"],
        caption=f"Budget {s['budget']} evaluations (nevergrad NGOpt, seed 42, weights in [-1.5, 1.5]).",
    )
    ctx.report.figure(png, "Objective of each evaluated weight vector (LoraHub weights A and B separately).")
    largest = max(abs(w) for w in weights.values())
    top = ", ".join(n for n, w in weights.items() if abs(w) == largest)
    first = objective[0]
    start = "the base (zero weights)" if not any(result.history[0][0]) else "the first evaluation"
    own_txt = (
        f", against {hub['ppl_own_brick']:.2f} with the {own} brick alone" if hub["ppl_own_brick"] is not None else ""
    )
    ctx.report.text(
        f"With {s['budget']} evaluations the search lowers the few-shot objective from {first:.3f} at {start} "
        f"to {min(objective):.3f}, with the largest weight |w| = {largest:.2f} on {top}. On held-out {domain} text "
        f"the composition scores {composed:.2f} against {hub['ppl_base']:.2f} for the base{own_txt}."
    )
    return hub
