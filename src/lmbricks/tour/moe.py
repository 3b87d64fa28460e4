"""Tour section ``moe``: a dense LM against an 8-expert top-2 MoE and a Switch top-1 MoE.

The comparison is :func:`lmbricks.train.compare.compare_arms` at the tour's budget
(:func:`lmbricks.train.compare.tour_config`), cached in ``ctx.cache_dir``; this section plots it
and writes its sentences.
"""

from __future__ import annotations

import hashlib
import json
import shutil

from lmbricks.tour.run import SummaryRow, TourContext
from lmbricks.train.arms import ARM_LABELS
from lmbricks.train.compare import (
    CompareResult,
    compare_arms,
    final_losses,
    interpretation,
    load_heatmap_rows,
    summary_table,
    tour_config,
    val_curve_series,
)


def _comparison(ctx: TourContext) -> CompareResult:
    """The comparison at the tour's budget, from the cache (keyed by budget and model) or trained now."""
    cfg = tour_config(ctx.quick)
    plan = cfg.model_dump(mode="json")
    key = hashlib.sha256(json.dumps({"plan": plan, "model": ctx.model_ref}, sort_keys=True).encode()).hexdigest()[:12]
    cache = ctx.cache_dir / f"moe-compare-{key}.json"
    if cache.exists():
        ctx.log("moe: reusing cached comparison")
        return CompareResult.from_dict(json.loads(cache.read_text()))
    _, tokenizer = ctx.model_and_tokenizer()
    result = compare_arms(cfg, tokenizer, str(ctx.model_path), ctx.cache_dir / "moe-runs", log=ctx.log)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict()))
    tmp.replace(cache)
    shutil.rmtree(ctx.cache_dir / "moe-runs", ignore_errors=True)
    return result


def moe_section(ctx: TourContext) -> list[SummaryRow]:
    """Dense vs top-2 MoE vs Switch MoE, trained live at a tiny budget; cached in ``ctx.cache_dir``."""
    from lmbricks.report import heatmap, line_chart

    result = _comparison(ctx)
    results, shape = result.arms, result.config.model
    ctx.results["moe"] = result.to_dict()
    ctx.report.section(
        "Dense vs mixture of experts",
        f"Three small LMs (hidden {shape.hidden_size}, {shape.num_layers} layers) trained "
        f"from scratch on the same {results['dense']['tokens']:,} tokens of the five domains, in the same order: "
        f"a dense SwiGLU of width {2 * shape.expert_intermediate}, 8 experts of width "
        f"{shape.expert_intermediate} with top-2 routing, and 8 experts of width "
        f"{2 * shape.expert_intermediate} with Switch top-1 routing: the same active feed-forward "
        "parameters per token. Validation loss is measured on held-out text of each domain.",
    )
    rows, cols = summary_table(results)
    ctx.report.table(rows, cols)
    png = line_chart(
        ctx.out_dir / "moe_val_loss.png",
        val_curve_series(results),
        "Validation loss (mean over domains)",
        "training tokens (thousands)",
        "nats per token",
    )
    ctx.report.figure(png, "Validation loss during training; same tokens, same active parameters.")
    if "top2" in results and "expert_load" in results["top2"]:
        matrix, labels, experts = load_heatmap_rows(results["top2"]["expert_load"])
        hm = heatmap(
            ctx.out_dir / "moe_domain_load.png", matrix, labels, experts, "Top-2 MoE: share of each domain's pairs"
        )
        ctx.report.figure(hm, "Per-domain expert load of the top-2 model (rows: domain and layer; sum 1).")
    ctx.report.text(interpretation(results))
    return [("moe", f"val loss {ARM_LABELS[a]}", f"{v:.3f}") for a, v in final_losses(results).items()]
