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

import math
import time
from pathlib import Path

from lmbricks.tour.run import SkipSection, SummaryRow, TourContext

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


def _bpb(ppl: float, tokens: int, n_bytes: int) -> float:
    """Bits per byte of a model scored on the same text (same tokens and bytes) with perplexity ``ppl``."""
    return math.log2(ppl) * tokens / max(n_bytes, 1)


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


def grow_section(ctx: TourContext) -> list[SummaryRow]:
    """Assemble (or reuse) the bricks' MoE, evaluate it against the base and the bricks, show its routing."""
    from lmbricks import load_model
    from lmbricks.grow import evaluate_routed
    from lmbricks.report import bar_chart, heatmap

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
    s = _settings(ctx.quick)
    path, build_s, reused = assembled_moe(ctx, bricks, s)
    ctx.results["routed_model"] = str(path)
    experts = list(bricks)
    domains = tour_domains(experts)
    t0 = time.perf_counter()
    moe, tokenizer = load_model(path)
    k, n_layers = moe.cfg.moe_config().top_k, moe.cfg.num_moe_layers
    moe_eval = evaluate_routed(moe, tokenizer, domains, ctx.eval_bytes)
    del moe
    moe_s = time.perf_counter() - t0
    base_model, _ = ctx.model_and_tokenizer()
    prev = (ctx.results.get("bricks") or {}).get("effects") or {}
    if prev.get("eval_bytes") == ctx.eval_bytes and all(d in (prev.get("ppl") or {}).get("base", {}) for d in domains):
        base_ppl, base_from = {d: float(prev["ppl"]["base"][d]) for d in domains}, "the bricks section"
    else:
        base_eval = evaluate_routed(base_model, tokenizer, domains, ctx.eval_bytes)
        base_ppl, base_from = {d: r.result.ppl for d, r in base_eval.items()}, "measured here"
    brick_ppl, brick_from = _brick_ppl(ctx, bricks)
    eval_s = time.perf_counter() - t0

    def bpb(ppl: float, d: str) -> float:
        r = moe_eval[d].result
        return _bpb(ppl, r.tokens, r.bytes)

    table, share_own = [], {}
    bpb_rows: dict[str, dict[str, float]] = {"base": {}, "own brick": {}, f"MoE top-{k}": {}}
    for d in domains:
        shares = moe_eval[d].shares()
        assert shares is not None
        own = shares[experts.index(d)].item() if d in experts else None
        if own is not None:
            share_own[d] = own
        b, m = bpb(base_ppl[d], d), moe_eval[d].result.bpb
        br = bpb(brick_ppl[d], d) if d in brick_ppl else None
        bpb_rows["base"][d], bpb_rows[f"MoE top-{k}"][d] = b, m
        if br is not None:
            bpb_rows["own brick"][d] = br
        table.append(
            [
                d,
                f"{b:.4f}",
                "-" if br is None else f"{br:.4f}",
                f"{m:.4f}",
                f"{m / b - 1:+.1%}",
                "-" if own is None else f"{own:.0%}",
                experts[int(shares.argmax())],
            ]
        )
    if not bpb_rows["own brick"]:
        del bpb_rows["own brick"]
    ctx.report.table(
        table, ["domain", "base bpb", "own brick bpb", "MoE bpb", "MoE vs base", "to own expert", "top expert"]
    )
    png = bar_chart(ctx.out_dir / "grow_bpb.png", bpb_rows, "Held-out bits per byte by domain", "bits/byte")
    ctx.report.figure(
        png,
        f"Held-out test text, first {ctx.eval_bytes:,} bytes per domain (base: {base_from}; own brick: "
        f"{brick_from}). Lower is better.",
    )
    matrix = [[round(float(x), 3) for x in moe_eval[d].shares_list()] for d in domains]
    heat = heatmap(
        ctx.out_dir / "grow_routing.png", matrix, domains, [f"{e}:{n}" for e, n in enumerate(experts)],
        f"Routing share (mean of {n_layers} layers)",
    )  # fmt: skip
    ctx.report.figure(heat, "Rows: the domain of the text; columns: the experts (named by their brick's domain).")
    gains = {d: 1 - bpb_rows[f"MoE top-{k}"][d] / bpb_rows["base"][d] for d in domains}
    better = [d for d in domains if gains[d] > 0]
    best = max(gains, key=lambda d: gains[d])
    mean_own = sum(share_own.values()) / max(len(share_own), 1)
    recovered = {
        d: (bpb_rows["base"][d] - bpb_rows[f"MoE top-{k}"][d]) / (bpb_rows["base"][d] - bpb_rows["own brick"][d])
        for d in bpb_rows.get("own brick", {})
        if bpb_rows["base"][d] - bpb_rows["own brick"][d] > 1e-6
    }
    most = f" (most on {best}: {gains[best]:.1%})" if better else ""
    text = (
        f"Without any training the assembled top-{k} MoE lowers bits per byte on {len(better)} of {len(domains)} "
        f"domains{most}; its routers send on average {mean_own:.0%} of a brick domain's tokens to that domain's "
        f"expert, against {1 / len(experts):.0%} by chance."
    )
    if recovered:
        mean_rec = sum(recovered.values()) / len(recovered)
        text += (
            f" On the bricks' own domains it keeps {mean_rec:.0%} of the gain each brick brings alone (its experts "
            "carry each brick's FFN update, its attention only the mean of their attention updates)."
        )
    ctx.report.text(text)
    ctx.results["grow"] = {
        "available": True,
        "model": str(path),
        "reused": reused,
        "experts": {d: str(p) for d, p in bricks.items()},
        "top_k": k,
        "eval_bytes": ctx.eval_bytes,
        "bits_per_byte": bpb_rows,
        "expert_share": {d: dict(zip(experts, row, strict=True)) for d, row in zip(domains, matrix, strict=True)},
        "own_brick_from": brick_from,
        "base_from": base_from,
        "seconds": {"assemble": round(build_s, 2), "evaluate_moe": round(moe_s, 2), "evaluate": round(eval_s, 2)},
    }
    rows: list[SummaryRow] = [
        (
            "grow",
            f"MoE top-{k} vs base (bpb, mean over domains)",
            f"{sum(-g for g in gains.values()) / len(gains):+.1%}",
        ),
        ("grow", "tokens to own-domain expert", f"{mean_own:.0%}"),
    ]
    return rows
