"""Tour sections of the foundation: the model's inventory and its bits per byte by domain."""

from __future__ import annotations

from lmbricks.eval import DEFAULT_DOMAINS, evaluate_domains
from lmbricks.report import bar_chart
from lmbricks.tour.inventory import model_inventory
from lmbricks.tour.run import SummaryRow, TourContext


def inventory_section(ctx: TourContext) -> list[SummaryRow]:
    """Parameters by role and FFN neurons per layer, read from the checkpoint headers."""
    inv = model_inventory(ctx.model_path)
    ctx.results["inventory"] = inv
    total = inv["total_parameters"]
    roles = inv["parameters_by_role"]
    ctx.report.section("Inventory", f"{ctx.model_ref}: {inv['architecture']} architecture, {total:,} parameters.")
    ctx.report.table(
        [[role, count, f"{count / total:.1%}"] for role, count in roles.items()], ["role", "parameters", "share"]
    )
    png = bar_chart(
        ctx.out_dir / "inventory.png",
        {role: count / 1e6 for role, count in roles.items() if count},
        "Parameters by role",
        "millions",
    )
    ctx.report.figure(png, "Parameters by role (millions).")
    biggest = max(roles, key=lambda k: roles[k])
    neurons = inv["ffn_neurons_per_layer"]
    ctx.report.text(
        f"The largest share is {biggest} ({roles[biggest] / total:.0%} of the parameters); the feed-forward "
        f"layers hold {roles.get('ffn', 0) / total:.0%} in {inv['num_layers']} layers of {neurons[0]:,} neurons "
        f"each, which is the raw material that MoEfication cuts into experts."
        + (" The output head is tied to the embedding, so it adds no parameters." if inv["tied_embeddings"] else "")
    )
    return [
        ("inventory", "parameters", f"{total / 1e6:.1f} M"),
        ("inventory", "FFN share", f"{roles.get('ffn', 0) / total:.0%}"),
    ]


def domains_section(ctx: TourContext) -> list[SummaryRow]:
    """Bits per byte per domain on held-out text (12 KB per domain, 3 KB in quick mode)."""
    model, tokenizer = ctx.inference_model()  # bf16 weights where precision says so
    max_bytes = 3_000 if ctx.quick else 12_000
    results = evaluate_domains(model, tokenizer, DEFAULT_DOMAINS, max_bytes=max_bytes)
    bpb = {d: r.bpb for d, r in results.items()}
    ctx.results["bits_per_byte"] = {d: r.to_dict() for d, r in results.items()}
    ctx.report.section(
        "Bits per byte by domain",
        f"Held-out test text, first {max_bytes:,} bytes per domain. Bits per byte compare across tokenizers.",
    )
    ctx.report.table(
        [[d, r.tokens, r.bytes, r.ppl, r.bpb] for d, r in results.items()],
        ["domain", "tokens", "bytes", "perplexity", "bits/byte"],
    )
    png = bar_chart(ctx.out_dir / "bits_per_byte.png", bpb, "Bits per byte by domain", "bits per byte")
    ctx.report.figure(png, "Lower is better.")
    easiest, hardest = min(bpb, key=lambda k: bpb[k]), max(bpb, key=lambda k: bpb[k])
    ctx.report.text(
        f"The model finds {easiest} easiest ({bpb[easiest]:.2f} bits per byte) and {hardest} hardest "
        f"({bpb[hardest]:.2f}), a ratio of {bpb[hardest] / bpb[easiest]:.1f}x. Domains this far apart are what "
        f"the per-domain analyses of the later sections (neurons, experts, bricks) need."
    )
    return [("bits per byte", d, f"{v:.3f}") for d, v in bpb.items()]
