"""Tour section: proxy-tuning, decoding a model with the difference a brick makes to another.

With the optional Qwen2.5-Coder pair in the model cache (and a brick catalogued for the 0.5B
model) the section steers the 1.5B model with it. Otherwise it says how to fetch them and shows the
mechanism on the default model: M1 = the model, M3 = the model with a shipped brick merged in, M2 =
the model again. Then ``M1 + alpha (M3 - M2)`` is the brick's effect scaled by ``alpha``: alpha 1
must reproduce the brick exactly (checked on the decoded tokens), alpha 2 doubles its logit shift.
Measured live: held-out perplexity of the ensemble per alpha, a batched greedy decode and tokens/s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmbricks.tour.run import SkipSection, SummaryRow, TourContext

if TYPE_CHECKING:
    from lmbricks.proxy.compare import ProxyComparison

QWEN_BASE = "qwen2.5-coder-1.5b-instruct"
QWEN_SMALL = "qwen2.5-coder-0.5b-instruct"
FETCH = f"lmbricks models fetch {QWEN_SMALL} && lmbricks models fetch {QWEN_BASE}"
#: Which brick steers the demo (the first one catalogued).
BRICK_ORDER = ("code", "zh", "dialogue", "math")
ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
PROMPTS = {
    "code": ["def fibonacci(n):", "import os\n\n\ndef list_python_files(path):", "class Stack:"],
    "zh": ["Debian 是一个", "如何安装软件包？", "系统管理员应该"],
    "dialogue": ["Hello, how are you?", "What is your favorite book?", "Do you like music?"],
    "math": ["Let $n$ be a positive integer such that", "Prove that for all real x,", "Find all primes p"],
}


def _cached(name: str) -> bool:
    from lmbricks.errors import ConfigError
    from lmbricks.hub import resolve_model

    try:
        resolve_model(name, fetch=False)
    except ConfigError:
        return False
    return True


def _pick_brick(model_ref: str) -> Any:
    """The first catalogued brick of ``model_ref`` in :data:`BRICK_ORDER` (then any), or None.

    A catalogue that cannot be read (an unreadable brick, a model that does not resolve) raises: the
    section fails and says why, rather than passing without its demo.
    """
    from lmbricks.adapters.catalogue import list_bricks

    entries = [e.brick for e in list_bricks(model_ref)]
    rank = {d: i for i, d in enumerate(BRICK_ORDER)}
    entries.sort(key=lambda b: rank.get(b.domain or "", len(rank)))
    return entries[0] if entries else None


def proxy_section(ctx: TourContext) -> list[SummaryRow]:
    """Proxy-tuning: the Qwen pair when cached, else a computed demo on the default model.

    Decoding only: the members get bf16 weights when the tour's precision is bf16 (bricks merged in fp32).
    """
    from lmbricks.proxy.load import load_member
    from lmbricks.runtime import inference_dtype

    dtype = inference_dtype(ctx.precision)

    ctx.report.section(
        "Proxy-tuning",
        "Decoding with logits = M1 + alpha (M3 - M2): a model (M1) steered by what tuning changed in another "
        "(M3 = M2 + a brick), without training M1 (Liu et al., arXiv 2401.08565).",
    )
    qwen = _cached(QWEN_BASE) and _cached(QWEN_SMALL)
    out: dict[str, Any] = {"optional_models": qwen}
    demo: dict[str, Any] | None = None
    if qwen:
        brick = _pick_brick(QWEN_SMALL)
        if brick is None:
            ctx.report.text(
                f"The Qwen pair is cached but no brick is catalogued for {QWEN_SMALL}: train one with "
                f"`lmbricks adapters train {QWEN_SMALL} out/qwen05-code --domain code` and "
                f"`lmbricks adapters plug out/qwen05-code --model {QWEN_SMALL}`. Meanwhile, the default model:"
            )
        else:
            ctx.log(f"proxy: {QWEN_BASE} steered by {QWEN_SMALL} + {brick.name}")
            base = load_member(QWEN_BASE, dtype=dtype)
            anti = load_member(QWEN_SMALL, dtype=dtype)
            expert = load_member(QWEN_SMALL, brick=brick.path, dtype=dtype)
            demo = _demo(ctx, base, expert, anti, brick, same_base_anti=False, label="qwen")
    else:
        ctx.report.text(f"The optional Qwen2.5-Coder pair is not in the model cache; fetch it with `{FETCH}`.")
    if demo is None:
        brick = _pick_brick(ctx.model_ref)
        if brick is None:
            ctx.results["proxy"] = out
            raise SkipSection(f"no brick is catalogued for {ctx.model_ref}, so there is no expert to steer with")
        base = load_member(ctx.model_path, dtype=dtype)
        expert = load_member(ctx.model_ref, brick=brick.path, dtype=dtype)
        demo = _demo(ctx, base, expert, base, brick, same_base_anti=True, label="default")
    out["demo"] = demo
    ctx.results["proxy"] = out
    return [
        ("proxy", f"ppl on {demo['domain']}: base / alpha 1 / alpha 2",
         f"{demo['ppl']['base']:.2f} / {demo['ppl']['proxy']['1.0']:.2f} / {demo['ppl']['proxy']['2.0']:.2f}"),
        ("proxy", "tokens/s proxy vs base alone",
         f"{demo['tokens_per_s']['proxy']:.1f} vs {demo['tokens_per_s']['base']:.1f}"),
    ]  # fmt: skip


def _demo(
    ctx: TourContext, base: Any, expert: Any, anti: Any, brick: Any, *, same_base_anti: bool, label: str
) -> dict[str, Any]:
    from lmbricks.data import domain_text
    from lmbricks.proxy.compare import compare_proxy

    domain = brick.domain or "code"
    text = domain_text(domain, "test", ctx.eval_bytes)
    prompts = PROMPTS.get(domain, PROMPTS["code"])[: 2 if ctx.quick else 3]
    cmp = compare_proxy(base, expert, anti, text, prompts, 12 if ctx.quick else 32, ALPHAS)
    scores = cmp.scores
    demo: dict[str, Any] = {
        "models": label,
        "brick": brick.name,
        "domain": domain,
        "eval_bytes": ctx.eval_bytes,
        "tokens_scored": scores.tokens,
        "ppl": {
            "base": scores.base,
            "expert": scores.expert,
            "anti": scores.anti,
            "proxy": {str(a): v for a, v in scores.proxy.items()},
        },
        "gap_closed_alpha1": scores.gap_closed(1.0),
        "batch": len(prompts),
        "new_tokens": cmp.new_tokens,
        "tokens_per_s": cmp.tokens_per_s(),
        "proxy_equals_expert_tokens": cmp.proxy_equals_expert(),
        "generations": [
            {"prompt": p, "base": b, "proxy": x}
            for p, b, x in zip(prompts, cmp.base.texts, cmp.proxy.texts, strict=True)
        ],
        "seconds": cmp.seconds,
    }
    _report_demo(ctx, cmp, domain, brick.name)
    ctx.report.text(_demo_sentences(cmp, same_base_anti))
    return demo


def _report_demo(ctx: TourContext, cmp: ProxyComparison, domain: str, brick_name: str) -> None:
    """The perplexity-vs-alpha curve, the members' table, the speed bars and the generations."""
    from lmbricks.report import bar_chart, line_chart

    scores, tps = cmp.scores, cmp.tokens_per_s()
    alphas = list(scores.proxy)
    png = line_chart(
        ctx.out_dir / "proxy_alpha.png",
        {
            "proxy M1 + a (M3 - M2)": (alphas, [scores.proxy[a] for a in alphas]),
            "M1 alone": (alphas, [scores.base] * len(alphas)),
            "M3 alone": (alphas, [scores.expert] * len(alphas)),
        },
        f"Held-out {domain} perplexity vs alpha ({scores.tokens} tokens)",
        "alpha",
        "perplexity (log scale)",
        logy=True,
    )
    members = [("M1 (base)", scores.base), ("M3 (expert)", scores.expert), ("M2 (anti-expert)", scores.anti)]
    ctx.report.table(
        [[m, f"{v:.3f}"] for m, v in members] + [[f"proxy, alpha {a:g}", f"{v:.3f}"] for a, v in scores.proxy.items()],
        ["model", f"perplexity on {domain}"],
        caption=f"First {ctx.eval_bytes:,} bytes of the {domain} test split; M3 = M2 + brick {brick_name}.",
    )  # fmt: skip
    ctx.report.figure(png, "The ensemble's perplexity as the expert-minus-anti-expert shift is scaled.")
    bars = bar_chart(
        ctx.out_dir / "proxy_speed.png",
        {"M1 alone": tps["base"], "M3 alone": tps["expert"], "proxy (3 models)": tps["proxy"]},
        f"Greedy decoding, batch {len(cmp.prompts)}, {cmp.new_tokens} new tokens",
        "tokens / s",
    )
    ctx.report.figure(bars, "Tokens per second including the prompt pass; each model keeps its own KV cache.")
    ctx.report.table(
        [[p, b, x] for p, b, x in zip(cmp.prompts, cmp.base.texts, cmp.proxy.texts, strict=True)],
        ["prompt", "M1 alone", "proxy, alpha 1"],
    )


def _demo_sentences(cmp: ProxyComparison, same_base_anti: bool) -> str:
    scores, tps = cmp.scores, cmp.tokens_per_s()
    best = min(scores.proxy, key=lambda a: scores.proxy[a])
    if same_base_anti:
        matches = cmp.proxy_equals_expert()
        first = (
            f"Here M2 is M1 itself, so alpha 1 reproduces the brick: perplexity {scores.proxy[1.0]:.3f} against "
            f"{scores.expert:.3f} for M3 alone, and the decoded tokens {'match' if matches else 'do NOT match'} M3's. "
        )
    else:
        first = (
            f"At alpha 1 the proxy scores {scores.proxy[1.0]:.3f} against {scores.base:.3f} for M1 and "
            f"{scores.expert:.3f} for M3 (gap closed: {scores.gap_closed(1.0):.0%}). "
        )
    return (
        first + f"The lowest perplexity is at alpha {best:g} ({scores.proxy[best]:.3f}, base {scores.base:.3f}); the "
        f"proxy decodes {tps['proxy']:.1f} tokens/s against {tps['base']:.1f} for M1 alone "
        f"({tps['proxy'] / tps['base']:.2f}x, three forward passes per token instead of one)."
    )
