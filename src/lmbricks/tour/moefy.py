"""Tour section: MoEfication of the default model at small settings (quality and FFN speed).

The default model's FFNs are cut into 32 experts (co-activation split refined for top-K capture,
linear routers fitted in closed form on a small calibration set); the result is cached in
``ctx.cache_dir / "moefied"`` and reused by later runs with the same settings. The section
measures the perplexity change per domain with the router at a few K (and the oracle at half the
experts), and one FFN's forward time versus the dense FFN. The full protocol is
``lmbricks moefy --eval`` and ``bench/moefy.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.report import line_chart
from lmbricks.tour.run import SummaryRow, TourContext

DOMAINS = DEFAULT_DOMAINS
EXPERTS = 32


def section_config(quick: bool) -> dict[str, Any]:
    """The MoEfication settings of the section (small calibration set, short router training)."""
    return {
        "experts": EXPERTS,
        "top_k": EXPERTS // 2,
        "split": "coactivation",
        "router": "linear",
        "calib_chunks": 1,
        "calib_seq_len": 256 if quick else 512,
    }


def cached_or_built(
    ctx: TourContext, settings: dict[str, Any], texts_of: Callable[[str, str], list[str]] | None = None
) -> tuple[Any, Any, bool]:
    """``(model, tokenizer, built)``: the cached MoEfied model if its settings match, else a new one."""
    from lmbricks.moefy import is_moefied, load_moefied, make_config, moefy_model, save_moefied
    from lmbricks.moefy.io import read_section

    cfg = make_config(**settings)
    path: Path = ctx.cache_dir / "moefied"
    if is_moefied(path) and read_section(path).get("moefy") == cfg.model_dump():
        model, tokenizer = load_moefied(path)
        return model, tokenizer, False
    from lmbricks.hub import load_hf_model

    model, tokenizer = load_hf_model(ctx.model_path)
    info = moefy_model(model, tokenizer, cfg, texts_of=texts_of, on_step=lambda msg: ctx.log(f"  moefy: {msg}"))
    save_moefied(model, path, cfg, info.permutations, source=ctx.model_path, tokenizer=tokenizer, force=True,
                 command="lmbricks tour (moefy section)")  # fmt: skip
    return model, tokenizer, True


def moefy_section(ctx: TourContext) -> list[SummaryRow]:
    """MoEfy (or reuse), then perplexity change at a few K and FFN speed versus dense."""
    return moefication_section(ctx)


def moefication_section(ctx: TourContext, texts_of: Callable[[str, str], list[str]] | None = None) -> list[SummaryRow]:
    """The body of :func:`moefy_section` (``texts_of`` replaces the corpora, for tests)."""
    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.moefy import moefied_layers
    from lmbricks.moefy.evaluate import DenseFFN, ppl_curve, time_ffn
    from lmbricks.tour.sparsity import block_length

    settings = section_config(ctx.quick)
    model, tokenizer, built = cached_or_built(ctx, settings, texts_of)
    seq_len = block_length(ctx)
    evals = domain_chunks(tokenizer, DOMAINS, "test", 1, seq_len, texts_of)
    ks = [8, 16] if ctx.quick else [4, 8, 16, 24]
    half = EXPERTS // 2
    result = ppl_curve(model, evals, ks, ("router",), on_step=lambda msg: ctx.log(f"  moefy eval: {msg}"))
    oracle = ppl_curve(model, evals, [half], ("oracle",)).find("oracle", half)
    assert oracle is not None
    layers = moefied_layers(model)
    ffn = layers[len(layers) // 2]
    timing = time_ffn(DenseFFN.of(ffn), ffn, ffn.hidden_size, ks + [EXPERTS], tokens=256,
                      rounds=5 if ctx.quick else 10)  # fmt: skip
    change = {p.top_k: {d: p.ppl[d] / result.dense_ppl[d] - 1.0 for d in DOMAINS} for p in result.points}
    mean = {k: result.change(p) for k, p in zip(change, result.points, strict=True)}
    oracle_mean = result.change(oracle)
    speed = {k: timing[f"K={k}_speedup"] for k in ks + [EXPERTS]}
    ctx.results["moefy"] = {
        "settings": settings,
        "built_this_run": built,
        "eval_tokens_per_domain": seq_len,
        "dense_ppl": result.dense_ppl,
        "router_ppl_change": {str(k): v for k, v in change.items()},
        "router_mean_change": {str(k): v for k, v in mean.items()},
        f"oracle_mean_change_K{half}": oracle_mean,
        "ffn_speedup": {str(k): v for k, v in speed.items()},
        "ffn_dense_ms": timing["dense_ms"],
    }
    ctx.report.section(
        "MoEfication",
        f"Each FFN's {ffn.n_experts * ffn.expert_size:,} neurons are cut into {EXPERTS} experts of "
        f"{ffn.expert_size} (co-activation split, linear router per layer, calibrated on "
        f"{settings['calib_seq_len']} tokens per domain{'' if built else '; loaded from the tour cache'}). "
        f"Perplexity on one block of {seq_len} tokens per domain; FFN time of layer {len(layers) // 2} "
        f"on 256 tokens versus the dense FFN.",
    )
    ctx.report.table(
        [
            [
                k,
                f"{k / EXPERTS:.0%}",
                *(f"{change[k][d]:+.1%}" for d in DOMAINS),
                f"{mean[k]:+.1%}",
                f"{speed[k]:.2f}x",
            ]  # fmt: skip
            for k in ks
        ]
        + [
            [
                half,
                f"{half / EXPERTS:.0%} (oracle)",
                *(f"{oracle.ppl[d] / result.dense_ppl[d] - 1:+.1%}" for d in DOMAINS),
                f"{oracle_mean:+.1%}",
                "-",
            ]
        ],  # fmt: skip
        ["K", "experts used", *DOMAINS, "mean", "FFN speedup"],
        caption="Relative perplexity change versus the dense model; speedup of the sparse FFN runtime",
    )
    fractions = [k / EXPERTS for k in ks]
    png = line_chart(
        ctx.out_dir / "moefy_quality.png",
        {
            "router: ppl change (%)": (fractions, [100 * mean[k] for k in ks]),
            "oracle: ppl change (%)": ([half / EXPERTS], [100 * oracle_mean]),
            "FFN speedup x100": (fractions, [100 * speed[k] for k in ks]),
        },
        "MoEfied default model: quality and FFN speed versus experts used",
        "fraction of experts used per token",
        "percent",
    )
    ctx.report.figure(png, "Mean perplexity change over five domains (router and oracle) and FFN speedup.")
    lo, hi = ks[0], ks[-1]
    ctx.report.text(
        f"With the learned routers, using {hi} of {EXPERTS} experts costs {mean[hi]:+.1%} mean perplexity and "
        f"{lo} of {EXPERTS} costs {mean[lo]:+.1%}, while the sparse FFN runs {speed[lo]:.2f}x faster than the "
        f"dense one at K={lo} ({speed[hi]:.2f}x at K={hi}). The oracle at {half} experts changes perplexity by "
        f"{oracle_mean:+.1%} against {mean[half]:+.1%} for the router, so "
        + (
            "the router, not the partition, is the larger loss"
            if mean[half] - oracle_mean > oracle_mean
            else "the partition itself, not the router, is the larger loss"
        )
        + " at this calibration budget."
    )
    return [
        ("moefy", f"ppl change, K={half}/{EXPERTS} (router)", f"{mean[half]:+.1%}"),
        ("moefy", f"FFN speedup, K={lo}/{EXPERTS}", f"{speed[lo]:.2f}x"),
    ]
