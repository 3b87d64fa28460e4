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
from typing import TYPE_CHECKING, Any

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.report import line_chart
from lmbricks.tour.run import SummaryRow, TourContext

if TYPE_CHECKING:
    from lmbricks.moefy.pipeline import MoefyMeasures

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


def moefy_section(ctx: TourContext) -> list[SummaryRow]:
    """MoEfy (or reuse), then perplexity change at a few K and FFN speed versus dense."""
    return moefication_section(ctx)


def moefication_section(ctx: TourContext, texts_of: Callable[[str, str], list[str]] | None = None) -> list[SummaryRow]:
    """The body of :func:`moefy_section` (``texts_of`` replaces the corpora, for tests)."""
    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.moefy import make_config
    from lmbricks.moefy.pipeline import cached_moefied, measure_moefied
    from lmbricks.tour.sparsity import block_length

    settings = section_config(ctx.quick)
    model, tokenizer, built = cached_moefied(
        ctx.model_path, ctx.cache_dir / "moefied", make_config(**settings), texts_of,
        on_step=lambda msg: ctx.log(f"  moefy: {msg}"), command="lmbricks tour (moefy section)",
    )  # fmt: skip
    seq_len = block_length(ctx)
    evals = domain_chunks(tokenizer, DOMAINS, "test", 1, seq_len, texts_of)
    ks = [8, 16] if ctx.quick else [4, 8, 16, 24]
    half = EXPERTS // 2
    m = measure_moefied(model, evals, ks, half, rounds=5 if ctx.quick else 10,
                        on_step=lambda msg: ctx.log(f"  moefy eval: {msg}"))  # fmt: skip
    mean, speed = m.router_mean, m.ffn_speedup
    ctx.results["moefy"] = _results(m, settings, built, seq_len)
    ctx.report.section(
        "MoEfication",
        f"Each FFN's {m.neurons:,} neurons are cut into {EXPERTS} experts of "
        f"{m.expert_size} (co-activation split, linear router per layer, calibrated on "
        f"{settings['calib_seq_len']} tokens per domain{'' if built else '; loaded from the tour cache'}). "
        f"Perplexity on one block of {seq_len} tokens per domain; FFN time of layer {m.timed_layer} "
        f"on 256 tokens versus the dense FFN.",
    )
    ctx.report.table(
        _table_rows(m, ks),
        ["K", "experts used", *DOMAINS, "mean", "FFN speedup"],
        caption="Relative perplexity change versus the dense model; speedup of the sparse FFN runtime",
    )
    fractions = [k / EXPERTS for k in ks]
    png = line_chart(
        ctx.out_dir / "moefy_quality.png",
        {
            "router: ppl change (%)": (fractions, [100 * mean[k] for k in ks]),
            "oracle: ppl change (%)": ([half / EXPERTS], [100 * m.oracle_mean]),
            "FFN speedup x100": (fractions, [100 * speed[k] for k in ks]),
        },
        "MoEfied default model: quality and FFN speed versus experts used",
        "fraction of experts used per token",
        "percent",
    )
    ctx.report.figure(png, "Mean perplexity change over five domains (router and oracle) and FFN speedup.")
    lo = ks[0]
    ctx.report.text(_conclusion(m, ks))
    return [
        ("moefy", f"ppl change, K={half}/{EXPERTS} (router)", f"{mean[half]:+.1%}"),
        ("moefy", f"FFN speedup, K={lo}/{EXPERTS}", f"{speed[lo]:.2f}x"),
    ]


def _results(m: MoefyMeasures, settings: dict[str, Any], built: bool, seq_len: int) -> dict[str, Any]:
    """The section's entry in results.json (keys by K as strings)."""
    return {
        "settings": settings,
        "built_this_run": built,
        "eval_tokens_per_domain": seq_len,
        "dense_ppl": m.dense_ppl,
        "router_ppl_change": {str(k): v for k, v in m.router_change.items()},
        "router_mean_change": {str(k): v for k, v in m.router_mean.items()},
        f"oracle_mean_change_K{m.oracle_k}": m.oracle_mean,
        "ffn_speedup": {str(k): v for k, v in m.ffn_speedup.items()},
        "ffn_dense_ms": m.ffn_dense_ms,
    }


def _table_rows(m: MoefyMeasures, ks: list[int]) -> list[list[Any]]:
    """One row per router K, then the oracle's: K, experts used, change per domain, mean, FFN speedup."""
    rows: list[list[Any]] = [
        [
            k,
            f"{k / EXPERTS:.0%}",
            *(f"{m.router_change[k][d]:+.1%}" for d in DOMAINS),
            f"{m.router_mean[k]:+.1%}",
            f"{m.ffn_speedup[k]:.2f}x",
        ]  # fmt: skip
        for k in ks
    ]
    oracle = [f"{m.oracle_change[d]:+.1%}" for d in DOMAINS]
    return rows + [[m.oracle_k, f"{m.oracle_k / EXPERTS:.0%} (oracle)", *oracle, f"{m.oracle_mean:+.1%}", "-"]]


def _conclusion(m: MoefyMeasures, ks: list[int]) -> str:
    """The section's closing sentences: cost and speed at the smallest and largest K, router versus oracle."""
    lo, hi, half = ks[0], ks[-1], m.oracle_k
    mean, speed = m.router_mean, m.ffn_speedup
    larger = (
        "the router, not the partition, is the larger loss"
        if mean[half] - m.oracle_mean > m.oracle_mean
        else "the partition itself, not the router, is the larger loss"
    )
    return (
        f"With the learned routers, using {hi} of {EXPERTS} experts costs {mean[hi]:+.1%} mean perplexity and "
        f"{lo} of {EXPERTS} costs {mean[lo]:+.1%}, while the sparse FFN runs {speed[lo]:.2f}x faster than the "
        f"dense one at K={lo} ({speed[hi]:.2f}x at K={hi}). The oracle at {half} experts changes perplexity by "
        f"{m.oracle_mean:+.1%} against {mean[half]:+.1%} for the router, so {larger} at this calibration budget."
    )
