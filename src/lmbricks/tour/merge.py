"""Tour section: merge two brick variants of the default model and compare per-domain bits per byte.

The variants are ``MODEL+bricks/<model>/zh`` and ``MODEL+bricks/<model>/math`` (each LoRA brick
applied on the fly by the merge executor, nothing materialised but the outputs), merged with TIES
against the base model. Every model is scored on the same held-out bytes of every domain, in the
tour's inference precision (bf16 weights where the CPU has native bf16; the merges are stored in bf16);
a later run on the same cache reads the scores of merges it did not rebuild.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lmbricks.eval import DEFAULT_DOMAINS, evaluate_domains
from lmbricks.report import bar_chart
from lmbricks.tour.run import SkipSection, SummaryRow, TourContext

VARIANTS = ("zh", "math")


def _recipe(base: Path, bricks: dict[str, Path], method: str) -> dict[str, Any]:
    """A lmbricks/mergekit recipe over ``base+brick`` references."""
    models = [{"model": f"{base}+{path}", "parameters": {"weight": 1.0, "density": 0.5}} for path in bricks.values()]
    recipe: dict[str, Any] = {"merge_method": method, "models": models, "dtype": "float32", "out_dtype": "bfloat16"}
    if method != "linear":
        recipe["base_model"] = str(base)
    return recipe


def _build(recipe: dict[str, Any], out: Path) -> tuple[Path, float]:
    """Merge ``recipe`` into ``out`` unless a finished output is cached there; returns (path, seconds)."""
    from lmbricks.merge import merge

    if (out / "lmbricks.json").exists():
        return out, 0.0
    start = time.perf_counter()
    merge(recipe, out, force=True, command="lmbricks tour (merge section)")
    return out, time.perf_counter() - start


def merge_section(ctx: TourContext) -> list[SummaryRow]:
    """Two brick variants, their TIES merge, and the base, scored per domain."""
    from lmbricks.adapters.catalogue import shipped_root

    root = shipped_root()
    bricks = {name: (root / ctx.model_path.name / name) if root else Path(name) for name in VARIANTS}
    missing = [str(p) for p in bricks.values() if not (p / "adapter_config.json").exists()]
    ctx.report.section("Merging bricks", "Two LoRA brick variants of the model merged with TIES, out of core.")
    if missing:  # not a source checkout, or a model without shipped bricks
        ctx.results["merge"] = {"available": False}
        raise SkipSection(f"no shipped bricks for {ctx.model_ref} (looked for {', '.join(missing)})")
    cache = ctx.cache_dir / "merge"
    built: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    for name, path in bricks.items():  # each variant alone: a one-model linear "merge" applies the brick
        built[f"+{name}"], seconds[f"+{name}"] = _build(
            {
                "merge_method": "linear",
                "models": [{"model": f"{ctx.model_path}+{path}", "parameters": {"weight": 1.0}}],
                "dtype": "float32",
                "out_dtype": "bfloat16",
            },
            cache / f"variant-{name}",
        )
    built["ties(+zh, +math)"], seconds["ties"] = _build(_recipe(ctx.model_path, bricks, "ties"), cache / "ties")

    bpb, rescored = _scores(ctx, built, cache / "scores.json", rebuilt=any(seconds.values()))
    ctx.results["merge"] = {"bits_per_byte": bpb, "merge_seconds": seconds, "eval_bytes": ctx.eval_bytes,
                            "precision": ctx.precision, "scores_cached": not rescored}  # fmt: skip

    ctx.report.table(
        [[name] + [f"{v[d]:.3f}" for d in DEFAULT_DOMAINS] for name, v in bpb.items()],
        ["model"] + list(DEFAULT_DOMAINS),
    )
    png = bar_chart(
        ctx.out_dir / "merge_bpb.png", bpb, "Bits per byte: base, brick variants and their merge", "bits/byte"
    )
    ctx.report.figure(png, f"Held-out bits per byte, first {ctx.eval_bytes:,} bytes per domain. Lower is better.")

    merged, base = bpb["ties(+zh, +math)"], bpb["base"]
    kept = {v: (1 - merged[v] / base[v]) / max(1e-9, 1 - bpb[f"+{v}"][v] / base[v]) for v in VARIANTS}
    ctx.report.text(_findings(bpb, kept, seconds["ties"]))
    return [
        ("merge", "zh gain kept", f"{kept['zh']:.0%}"),
        ("merge", "math gain kept", f"{kept['math']:.0%}"),
    ]


def _scores(ctx: TourContext, built: dict[str, Path], path: Path, rebuilt: bool) -> tuple[dict[str, Any], bool]:
    """Bits per byte per model and domain: read from ``path`` when it scored these very merges, else measured.

    The merges are written in bf16: under bf16 precision they are scored on those very weights (and the
    base on its bf16 copy), as the other inference-only sections are; fp32 upcasts them. The record at
    ``path`` holds the settings it was measured with; any other setting, or a merge built in this run,
    scores everything again.

    Returns:
        ``({model: {domain: bpb}}, whether it was measured now)``.
    """
    from lmbricks import load_model
    from lmbricks.runtime import inference_dtype

    key = {"model": str(ctx.model_path), "eval_bytes": ctx.eval_bytes, "precision": ctx.precision,
           "domains": list(DEFAULT_DOMAINS), "models": sorted(built)}  # fmt: skip
    if path.exists() and not rebuilt:
        record = json.loads(path.read_text())
        if record.get("key") == key:
            return record["bits_per_byte"], False
    model, tokenizer = ctx.inference_model()
    scores = {"base": evaluate_domains(model, tokenizer, DEFAULT_DOMAINS, max_bytes=ctx.eval_bytes)}
    for name, merged in built.items():
        other, _tok = load_model(merged, dtype=inference_dtype(ctx.precision))
        scores[name] = evaluate_domains(other, tokenizer, DEFAULT_DOMAINS, max_bytes=ctx.eval_bytes)
        del other
    bpb = {name: {d: r.bpb for d, r in res.items()} for name, res in scores.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "bits_per_byte": bpb}))
    tmp.replace(path)  # complete or absent
    return bpb, True


def _findings(bpb: dict[str, dict[str, float]], kept: dict[str, float], seconds: float) -> str:
    """The section's sentences: the share of each brick's gain kept, the best domain, the build time."""
    merged, base = bpb["ties(+zh, +math)"], bpb["base"]
    gains = {d: 1 - merged[d] / base[d] for d in DEFAULT_DOMAINS}
    best_domain = max(gains, key=lambda d: gains[d])
    return (
        f"The merged model keeps {kept['zh']:.0%} of the zh brick's gain on zh and {kept['math']:.0%} of the math "
        f"brick's gain on math, in one set of weights; its largest improvement over the base is on {best_domain} "
        f"({gains[best_domain]:+.1%} bits per byte). "
        + (
            f"Building it took {seconds:.1f} s with the bricks applied on the fly."
            if seconds
            else "It was reused from the tour's cache."
        )
    )
