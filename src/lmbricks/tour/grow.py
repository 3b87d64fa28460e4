"""Tour section: grow a mixture of experts from the default model's shipped bricks.

The section assembles an MoE whose experts are the base FFN with each domain brick merged in, whose
attention is the base's plus the mean of the bricks' attention updates (Branch-Train-MiX), and
whose router rows are the domain means of the router inputs (``gate_mode: domain``, no training).
It caches the MoE in ``ctx.cache_dir / "assembled-moe"`` (reused by later runs and traced by the
trace section through ``ctx.results["routed_model"]``), then measures held-out bits per byte of the
MoE and of the base (taken from the bricks section when it scored the same text, as are the bricks'
own-domain numbers), and where the MoE routes each domain's tokens. The cached MoE is reused as it
is whatever the mode (delete the folder to rebuild it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from lmbricks.tour.run import SkipSection, SummaryRow, TourContext

if TYPE_CHECKING:
    from lmbricks.grow.compare import MoEComparison

CACHE_NAME = "assembled-moe"


def _settings(quick: bool) -> dict[str, int]:
    """Tokens per domain for the router rows, and experts per token of the tour's MoE."""
    return {"domain_tokens": 256 if quick else 512, "top_k": 1}


def tour_domains(brick_domains: list[str]) -> list[str]:
    """The standard domains that are cached (or that a brick needs), then the bricks' other domains."""
    from lmbricks.data.store import read_manifest
    from lmbricks.eval import DEFAULT_DOMAINS

    cols = [d for d in DEFAULT_DOMAINS if d in brick_domains or read_manifest(d) is not None]
    return cols + [d for d in brick_domains if d not in cols]


def domain_bricks(model_ref: str) -> dict[str, Path]:
    """``{domain: brick directory}`` of the catalogued bricks of ``model_ref`` that name a domain."""
    from lmbricks.adapters.catalogue import list_bricks

    out: dict[str, Path] = {}
    for entry in list_bricks(model_ref):
        d = entry.brick.domain
        if d and d not in out:
            out[d] = entry.brick.path
    return out


def assembled_moe(ctx: TourContext, bricks: dict[str, Path], s: dict[str, int]) -> tuple[Path, float, bool]:
    """The cached MoE directory (built if absent): (path, seconds spent building, reused?)."""
    from lmbricks.grow import assemble

    path = ctx.cache_dir / CACHE_NAME
    if (path / "config.json").is_file() and (path / "lmbricks.json").is_file():
        return path, 0.0, True
    recipe = {
        "base_model": str(ctx.model_path),
        "gate_mode": "domain",
        "experts_per_token": s["top_k"],
        "domain_tokens": s["domain_tokens"],
        "non_experts": "average",  # Branch-Train-MiX: the bricks' attention updates averaged (docs/grow.md)
        "dtype": "float16",  # keeps the bricks' updates (bfloat16 would round them) at half fp32's size
        "experts": [{"brick": str(p), "domain": d} for d, p in bricks.items()],
    }
    t0 = time.perf_counter()
    assemble(
        recipe, path, force=True, log=ctx.log, command="lmbricks tour (grow section)", base=ctx.model_and_tokenizer()
    )
    return path, time.perf_counter() - t0, False


def _brick_ppl(ctx: TourContext, bricks: dict[str, Path]) -> tuple[dict[str, float], str]:
    """Perplexity of each brick on its own domain, taken from the bricks section when it measured the
    same text (evaluating four more models here would double the section's time). Returns
    ``({domain: ppl}, where from)``."""
    effects = (ctx.results.get("bricks") or {}).get("effects") or {}
    rows = effects.get("ppl") or {}
    if effects.get("eval_bytes") == ctx.eval_bytes:
        found = {d: float(rows[d][d]) for d in bricks if d in rows and d in rows[d]}
        if found:
            return found, "the bricks section"
    return {}, "not measured here (the bricks section measures them when it runs first and passes)"


def _base_ppl(ctx: TourContext, domains: list[str]) -> dict[str, float] | None:
    """The base's perplexity per domain from the bricks section when it scored the same text, else None."""
    prev = (ctx.results.get("bricks") or {}).get("effects") or {}
    if prev.get("eval_bytes") == ctx.eval_bytes and all(d in (prev.get("ppl") or {}).get("base", {}) for d in domains):
        return {d: float(prev["ppl"]["base"][d]) for d in domains}
    return None


def grow_section(ctx: TourContext) -> list[SummaryRow]:
    """Assemble (or reuse) the bricks' MoE, evaluate it against the base and the bricks, show its routing."""
    from lmbricks.grow.compare import compare_moe

    ctx.report.section(
        "Grow: a mixture of experts from bricks",
        "Each expert is the base FFN with one domain brick merged in; attention is the base plus the mean of the "
        "bricks' attention updates (Branch-Train-MiX); each router row is the mean router input over that "
        "domain's training text (`lmbricks moe assemble`, gate_mode domain, no training).",
    )
    bricks = domain_bricks(ctx.model_ref)
    if len(bricks) < 2:  # a model without (enough) bricks; bricks that are refused fail in assemble()
        ctx.results["grow"] = {"available": False}
        raise SkipSection(
            f"{len(bricks)} domain brick(s) catalogued for {ctx.model_ref}; an MoE needs at least two experts"
        )
    path, build_s, reused = assembled_moe(ctx, bricks, _settings(ctx.quick))
    ctx.results["routed_model"] = str(path)
    domains = tour_domains(list(bricks))
    base_ppl = _base_ppl(ctx, domains)
    brick_ppl, brick_from = _brick_ppl(ctx, bricks)
    cmp = compare_moe(path, list(bricks), domains, ctx.eval_bytes, base=lambda: ctx.model_and_tokenizer()[0],
                      base_ppl=base_ppl, brick_ppl=brick_ppl)  # fmt: skip
    base_from = "measured here" if cmp.base_measured else "the bricks section"
    _report(ctx, cmp, base_from, brick_from)
    gains, own = cmp.gains(), cmp.own_share()
    mean_own = sum(own.values()) / max(len(own), 1)
    ctx.results["grow"] = {
        "available": True,
        "model": str(path),
        "reused": reused,
        "experts": {d: str(p) for d, p in bricks.items()},
        "top_k": cmp.top_k,
        "eval_bytes": ctx.eval_bytes,
        "bits_per_byte": cmp.bpb,
        "expert_share": {d: dict(zip(cmp.experts, _share_row(cmp, d), strict=True)) for d in domains},
        "own_brick_from": brick_from,
        "base_from": base_from,
        "seconds": {"assemble": round(build_s, 2), "evaluate_moe": round(cmp.seconds["evaluate_moe"], 2),
                    "evaluate": round(cmp.seconds["evaluate"], 2)},
    }  # fmt: skip
    return [
        ("grow", f"MoE top-{cmp.top_k} vs base (bpb, mean over domains)",
         f"{sum(-g for g in gains.values()) / len(gains):+.1%}"),
        ("grow", "tokens to own-domain expert", f"{mean_own:.0%}"),
    ]  # fmt: skip


def _share_row(cmp: MoEComparison, domain: str) -> list[float]:
    """A domain's routing shares per expert, rounded for the heatmap and results.json."""
    return [round(float(x), 3) for x in cmp.shares[domain]]


def _report(ctx: TourContext, cmp: MoEComparison, base_from: str, brick_from: str) -> None:
    """The comparison table, the bits-per-byte and routing figures, and the sentences."""
    from lmbricks.report import bar_chart, heatmap

    own, moe, base = cmp.own_share(), cmp.bpb[cmp.moe_row], cmp.bpb["base"]
    bricks = cmp.bpb.get("own brick", {})
    table = []
    for d in cmp.domains:
        brick = f"{bricks[d]:.4f}" if d in bricks else "-"
        share = f"{own[d]:.0%}" if d in own else "-"
        table.append([d, f"{base[d]:.4f}", brick, f"{moe[d]:.4f}", f"{moe[d] / base[d] - 1:+.1%}", share,
                      cmp.top_expert(d)])  # fmt: skip
    ctx.report.table(
        table, ["domain", "base bpb", "own brick bpb", "MoE bpb", "MoE vs base", "to own expert", "top expert"]
    )
    png = bar_chart(ctx.out_dir / "grow_bpb.png", cmp.bpb, "Held-out bits per byte by domain", "bits/byte")
    ctx.report.figure(
        png,
        f"Held-out test text, first {ctx.eval_bytes:,} bytes per domain (base: {base_from}; own brick: "
        f"{brick_from}). Lower is better.",
    )
    matrix = [_share_row(cmp, d) for d in cmp.domains]
    heat = heatmap(
        ctx.out_dir / "grow_routing.png", matrix, cmp.domains, [f"{e}:{n}" for e, n in enumerate(cmp.experts)],
        f"Routing share (mean of {cmp.n_layers} layers)",
    )  # fmt: skip
    ctx.report.figure(heat, "Rows: the domain of the text; columns: the experts (named by their brick's domain).")
    ctx.report.text(_sentences(cmp))


def _sentences(cmp: MoEComparison) -> str:
    gains, own, recovered = cmp.gains(), cmp.own_share(), cmp.recovered()
    better = [d for d in cmp.domains if gains[d] > 0]
    best = max(gains, key=lambda d: gains[d])
    mean_own = sum(own.values()) / max(len(own), 1)
    most = f" (most on {best}: {gains[best]:.1%})" if better else ""
    text = (
        f"Without any training the assembled top-{cmp.top_k} MoE lowers bits per byte on {len(better)} of "
        f"{len(cmp.domains)} domains{most}; its routers send on average {mean_own:.0%} of a brick domain's tokens "
        f"to that domain's expert, against {1 / len(cmp.experts):.0%} by chance."
    )
    if recovered:
        mean_rec = sum(recovered.values()) / len(recovered)
        text += (
            f" On the bricks' own domains it keeps {mean_rec:.0%} of the gain each brick brings alone (its experts "
            "carry each brick's FFN update, its attention only the mean of their attention updates)."
        )
    return text
