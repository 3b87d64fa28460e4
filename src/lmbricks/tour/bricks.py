"""Tour section: the shipped LoRA bricks: their effect per domain, routing between them, a LoraHub mix.

Everything is measured live on the default model: held-out perplexity of the base and of the base
with each brick on every domain (``ctx.eval_bytes`` per domain), routing of a few held-out texts
per domain by the nearest domain centroid (centroids come from the centroid cache after the first
run), and one LoraHub search of per-brick weights on a few examples of one domain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmbricks.tour.run import SkipSection, SummaryRow, TourContext

if TYPE_CHECKING:
    from lmbricks.adapters.session import BrickSet
    from lmbricks.adapters.survey import LoraHubMix, SurveySettings


def _settings(quick: bool, eval_bytes: int) -> SurveySettings:
    """Budgets: routing documents and their length, centroid tokens, LoraHub examples and evaluations.

    The model costs about 2-4 ms of CPU per token, so every budget here is counted in tokens: quick
    mode scores about 10k tokens, full mode about 28k (plus the centroids on a first run), most of
    them in the effect table (5 models x 4 domains x ``ctx.eval_bytes``).
    """
    from lmbricks.adapters.survey import SurveySettings

    if quick:
        return SurveySettings(eval_bytes=eval_bytes, route_docs=2, route_tokens=128, centroid_tokens=512, examples=2,
                              example_tokens=48, budget=6)  # fmt: skip
    return SurveySettings(eval_bytes=eval_bytes, route_docs=3, route_tokens=128, centroid_tokens=1024, examples=3,
                          example_tokens=64, budget=8)  # fmt: skip


def _report_effects(ctx: TourContext, rows: dict[str, dict[str, float]], domains: list[str], domain_of: dict) -> str:
    from lmbricks.adapters.survey import ppl_change as _change
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


def _catalogued(ctx: TourContext) -> BrickSet:
    """The catalogued bricks of the tour's model that record their domain; skips the section without any.

    Bricks that are catalogued but refused (trained on another base: the hash differs) are a failure:
    ``load_bricks`` raises, and the tour reports the refusal instead of an effect table.
    """
    from lmbricks.adapters.catalogue import list_bricks
    from lmbricks.adapters.session import load_bricks
    from lmbricks.adapters.survey import with_domains

    train = "train one with `lmbricks adapters train MODEL OUT --domain D` and plug it in"
    if not list_bricks(ctx.model_ref):  # a model without bricks: nothing to show, and nothing wrong
        ctx.results["bricks"] = {"available": False}
        raise SkipSection(f"no bricks are catalogued for {ctx.model_ref}; {train}")
    bset = with_domains(load_bricks(ctx.model_ref))
    if not bset.infos:
        ctx.results["bricks"] = {"available": False}
        raise SkipSection(f"none of the bricks catalogued for {ctx.model_ref} records its domain; {train}")
    return bset


def bricks_section(ctx: TourContext) -> list[SummaryRow]:
    """Effect table of the shipped bricks, routing accuracy between them, and one LoraHub composition."""
    from lmbricks.adapters.survey import survey_bricks

    ctx.report.section(
        "Customized bricks",
        "LoRA bricks trained per domain (scripts/train_bricks.py) and plugged into the base model: what each "
        "does to every domain, whether a router finds the right one, and a LoraHub mix of all of them.",
    )
    s = _settings(ctx.quick, ctx.eval_bytes)
    survey = survey_bricks(_catalogued(ctx), s)
    ctx.report.text(_report_effects(ctx, survey.effects, survey.domains, survey.domain_of))
    _report_routing(ctx, survey.routing, s, survey.stats)
    _report_lorahub(ctx, survey.lorahub)
    ctx.results["bricks"] = survey.results(s)
    routing, hub = survey.routing["all"], survey.lorahub
    return [("bricks", f"own-domain ppl change ({n})", f"{100 * v:+.1f}%") for n, v in survey.own_change().items()] + [
        ("bricks", "routing accuracy", f"{routing['accuracy']:.0%} of {routing['docs']}"),
        ("bricks", f"LoraHub on {hub.domain}", f"ppl {hub.ppl_base:.2f} -> {hub.ppl_composed:.2f}"),
    ]


def _report_routing(ctx: TourContext, routing: dict[str, Any], s: SurveySettings, stats: Any) -> None:
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
        caption=f"{s.route_docs} test documents per domain, first {s.route_tokens} tokens each; centroids "
        f"over {s.centroid_tokens} training tokens per brick ({stats.hits} read from the cache, "
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


def _report_lorahub(ctx: TourContext, hub: LoraHubMix) -> None:
    from lmbricks.report import line_chart

    best_so_far, curve = float("inf"), []
    for v in hub.objective:
        best_so_far = min(best_so_far, v)
        curve.append(best_so_far)
    xs = list(range(1, len(curve) + 1))
    png = line_chart(
        ctx.out_dir / "bricks_lorahub.png",
        {"evaluated": (xs, hub.objective), "best so far": (xs, curve)},
        f"LoraHub search on {hub.examples} {hub.domain} examples",
        "evaluation",
        "cross-entropy + 0.05 mean|w|",
    )
    ctx.report.table(
        [[n, f"{w:+.3f}"] for n, w in hub.weights.items()],
        ["brick", "LoraHub weight"],
        caption=f"Budget {hub.budget} evaluations (nevergrad NGOpt, seed 42, weights in [-1.5, 1.5]).",
    )
    ctx.report.figure(png, "Objective of each evaluated weight vector (LoraHub weights A and B separately).")
    largest = max(abs(w) for w in hub.weights.values())
    top = ", ".join(n for n, w in hub.weights.items() if abs(w) == largest)
    start = "the base (zero weights)" if hub.starts_at_zero else "the first evaluation"
    own_txt = (
        f", against {hub.ppl_own_brick:.2f} with the {hub.own} brick alone" if hub.ppl_own_brick is not None else ""
    )
    ctx.report.text(
        f"With {hub.budget} evaluations the search lowers the few-shot objective from {hub.objective[0]:.3f} at "
        f"{start} to {min(hub.objective):.3f}, with the largest weight |w| = {largest:.2f} on {top}. On held-out "
        f"{hub.domain} text the composition scores {hub.ppl_composed:.2f} against {hub.ppl_base:.2f} for the "
        f"base{own_txt}."
    )
