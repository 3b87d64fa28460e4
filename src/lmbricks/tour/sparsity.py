"""Tour section: per-token activation sparsity of the default model (the masking curve).

Each FFN keeps only the top ``1 - rho`` of its neurons per token by the output-norm metric
``|a_i| * ||W_down[:, i]||`` and the section measures the perplexity change per domain, on a
small evaluation budget (one block per domain). The full protocol, with both metrics, the
distributions and CETT, is ``lmbricks analyze sparsity`` (docs/emergent-bricks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.report import line_chart
from lmbricks.tour.run import SummaryRow, TourContext

DOMAINS = DEFAULT_DOMAINS
FULL_SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9)
QUICK_SPARSITIES = (0.0, 0.5, 0.8)
MID = "0.5"  # the masked fraction the summary quotes beside the highest one


def block_length(ctx: TourContext) -> int:
    """Tokens per evaluation block: ``ctx.eval_bytes / 8`` rounded up to 64, at least 192 (384 full, 192 quick).

    Every masking level is one forward pass over a block per domain, so the block is kept short.
    """
    return max(192, -(-ctx.eval_bytes // 8 // 64) * 64)


def sparsity_section(ctx: TourContext) -> list[SummaryRow]:
    """The masking curve (norm metric) on one block per domain; plot, table and interpretation.

    An inference-only pass: bf16 weights when the tour's precision is bf16 (``auto`` on a native-bf16 CPU).
    """
    from lmbricks.hub import load_hf_model
    from lmbricks.runtime import inference_dtype

    # analysis hooks need the HF module names, so the HF model rather than ctx.inference_model()
    model, tokenizer = load_hf_model(ctx.model_path, dtype=inference_dtype(ctx.precision))
    return masking_section(ctx, model, tokenizer)


def masking_section(
    ctx: TourContext, model: Any, tokenizer: Any, texts_of: Callable[[str, str], list[str]] | None = None
) -> list[SummaryRow]:
    """The body of :func:`sparsity_section` for a given HF model (``texts_of`` replaces the corpora)."""
    from lmbricks.analysis import SparsityConfig, analyze_sparsity, find_ffns
    from lmbricks.analysis.sparsity import masking_changes

    rhos = QUICK_SPARSITIES if ctx.quick else FULL_SPARSITIES
    seq_len = block_length(ctx)
    cfg = SparsityConfig(DOMAINS, rhos, ("norm",), None, n_chunks=1, seq_len=seq_len, batch_size=len(DOMAINS))
    result = analyze_sparsity(
        model, tokenizer, cfg, texts_of=texts_of, on_step=lambda msg: ctx.log(f"  sparsity: {msg}")
    )
    measured = {"tokens_per_domain": seq_len, "base_ppl": result.base_ppl, **masking_changes(result)}
    ctx.results["sparsity"] = measured
    change, mean = measured["ppl_change"], measured["mean_change"]
    ctx.report.section(
        "Activation sparsity",
        f"Every FFN keeps only the top (1 - rho) of its {find_ffns(model)[0].width:,} neurons per token, ranked by "
        f"|a_i| * ||W_down[:, i]||; perplexity on one block of {seq_len} tokens per domain (test split).",
    )
    ctx.report.table(
        [[f"{float(r):.0%}", *(f"{change[r][d]:+.1%}" for d in DOMAINS), f"{mean[r]:+.1%}"] for r in change],
        ["masked", *DOMAINS, "mean"],
        caption="Relative perplexity change versus the unmasked model",
    )
    kept = [1.0 - float(r) for r in change]
    series = {d: (kept, [100 * change[r][d] for r in change]) for d in DOMAINS}
    series["mean"] = (kept, [100 * mean[r] for r in change])
    png = line_chart(
        ctx.out_dir / "sparsity_masking.png",
        series,
        "Per-token neuron masking (norm metric)",
        "fraction of neurons kept per token",
        "perplexity change (%)",
    )
    ctx.report.figure(png, "Perplexity change per domain as fewer neurons are kept (lower is better).")
    high = max(r for r in change if r != "0")
    ctx.report.text(_sentence(change, mean, measured["top_share_norm"], high))
    return [
        ("sparsity", f"ppl change, {float(MID):.0%} masked", f"{mean[MID]:+.1%}"),
        ("sparsity", f"ppl change, {float(high):.0%} masked", f"{mean[high]:+.1%}"),
    ]


def _sentence(change: dict[str, dict[str, float]], mean: dict[str, float], share: dict[str, float], high: str) -> str:
    worst = max(DOMAINS, key=lambda d: change[high][d])
    best = min(DOMAINS, key=lambda d: change[high][d])
    verdict = "little" if mean[high] < 0.10 else ("a moderate" if mean[high] < 0.5 else "a large")
    return (
        f"Masking half the neurons of every token changes mean perplexity by {mean[MID]:+.1%}, masking "
        f"{float(high):.0%} by {mean[high]:+.1%}: {verdict} cost at this size, with {worst} hit hardest "
        f"({change[high][worst]:+.1%}) and {best} least ({change[high][best]:+.1%}). On average the top 30% of "
        f"neurons carry {share['top 30%']:.0%} of a token's output-norm mass, which bounds how much an expert "
        f"split of the FFN can drop per token."
    )
