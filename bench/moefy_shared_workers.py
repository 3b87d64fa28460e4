"""bench/moefy.py ``--shared-experts S``: MoEfication with and without S always-on shared experts.

At the same active-neuron count (``--active A`` experts of E per token, shared ones included) the
model is cut twice, ``shared_experts=0`` with K = A routed experts and ``shared_experts=S`` with
K = A - S (CMoE, arXiv 2502.04416: the S n most activated neurons always on), and the perplexity
change against the same model's dense FFNs is measured with the router and with the oracle, at A
and at A / 2 active experts. Perplexity only: no timing, no healing. Every stage's wall and CPU
seconds are in ``stages`` (the machine is shared; CPU time is the clock that means something).
"""

from __future__ import annotations

from typing import Any

from lmbricks.data.registry import DEFAULT_DOMAINS


def _arm(args: Any, shared: int, actives: list[int], evals: dict[str, Any], clock: Any) -> dict[str, Any]:
    """Convert a fresh copy of ``args.model`` with ``shared`` shared experts; router/oracle ppl at each A."""
    from lmbricks.hub import load_hf_model
    from lmbricks.moefy import make_config, moefy_model
    from lmbricks.moefy.evaluate import ppl_curve

    clock.start(f"convert, shared_experts={shared}")
    model, tokenizer = load_hf_model(args.model)
    cfg = make_config(experts=args.experts, top_k=actives[-1] - shared, shared_experts=shared, split=args.split,
                      router=args.router, calib_chunks=args.calib_chunks or 2, calib_seq_len=args.calib_seq_len,
                      router_steps=300)  # fmt: skip
    info = moefy_model(model, tokenizer, cfg)
    clock.start(f"perplexity, shared_experts={shared}")
    curve = ppl_curve(model, evals, [a - shared for a in actives], ("oracle", "router"))
    out: dict[str, Any] = {"dense_ppl": curve.dense_ppl, "calib_tokens": info.calib_tokens}
    for point in curve.points:
        active = (point.top_k or 0) + shared
        out[f"{point.mode}_{active}"] = {"change": float(curve.change(point)), "ppl": point.ppl, "top_k": point.top_k}
    out["router_recall"] = sum(info.router_recall) / max(len(info.router_recall), 1)
    return out


def shared_run(args: Any, clock: Any) -> dict[str, Any]:
    """The JSON of the comparison: headline keys at ``args.active`` experts, the details after."""
    import torch

    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.hub import load_tokenizer

    shared, e = args.shared_experts, args.experts
    actives = sorted({max(shared + 1, args.active // 2), args.active})
    evals = domain_chunks(load_tokenizer(args.model), DEFAULT_DOMAINS, "test", args.eval_chunks or 2,
                          args.eval_seq_len)  # fmt: skip
    plain = _arm(args, 0, actives, evals, clock)
    with_shared = _arm(args, shared, actives, evals, clock)
    clock.stop()
    a = args.active
    return {
        "ppl_change_router_no_shared": plain[f"router_{a}"]["change"],
        "ppl_change_router_shared": with_shared[f"router_{a}"]["change"],
        "ppl_change_oracle_no_shared": plain[f"oracle_{a}"]["change"],
        "ppl_change_oracle_shared": with_shared[f"oracle_{a}"]["change"],
        "active_experts": a,
        "active_fraction": a / e,
        "shared_experts": shared,
        "clock": "cpu (process time per stage)",
        "details": {
            "model": args.model,
            "experts": e,
            "split": args.split,
            "router": args.router,
            "changes_note": "mean over domains of ppl / dense ppl - 1, dense = the same model with its dense FFNs",
            "eval_tokens_per_domain": (args.eval_chunks or 2) * args.eval_seq_len,
            "no_shared": plain,
            "shared": with_shared,
            "threads": args.threads or torch.get_num_threads(),
            "stages": clock.stages,
        },
    }
