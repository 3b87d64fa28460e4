"""bench/moefy.py's ReLU-fied arm (``--relufied DIR``): the same MoEfication of a ReLU-fied ``--model``.

A helper of bench/moefy.py, never a script of its own (named ``*_workers`` so that ``make bench``
skips it, as it skips the harness's workers); its own timed workloads are moefy_workers.py's.

The ReLU-fied model (``lmbricks sparsify relufy``'s output; FATReLU's threshold restored from its
``lmbricks`` section, ``moefy_workers.load_dense``) is converted with the source's settings, on the
same calibration and test blocks, and measured like the source:

- ``relufied_sparsity``: the exact-zero fraction of its gate activations on the test blocks;
- ``relufied_ppl_change``: its mean perplexity change against the **source SwiGLU model**;
- ``ppl_change_50pct_healed_relufied`` / ``ppl_change_25pct_healed_relufied``: the MoEfied
  ReLU-fied model after healing (teacher: the dense ReLU-fied model, same budget and settings as
  the source's healing), against the source SwiGLU model too (``details_relufied`` repeats every
  change against the dense ReLU-fied model);
- ``ffn_speedup_25pct_relufied``: its FFN at 25% of the experts against the faster dense anchor
  (LlamaMLP or the fused gate_up FFN, both with FATReLU), prefill, with zero-skipping where it
  pays: each K is timed with zero-skipping off (``K=k``) and on (``K=k+zs``) and the faster one
  counts (``zero_skip_used`` says which).

Its timed phases are the FFN's prefill and decode and the whole model's decoding
(``--relufied-phases`` picks; the FFN's prefill always, the whole model's prefill is not timed for
this arm), each arm in fresh processes, rotating every round, medians (bench/harness.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

RELUFIED_PHASES = ("ffn_prefill", "ffn_decode", "model_decode")
REFERENCE = (
    "relufied_ppl_change and the *_relufied ppl changes are against the source SwiGLU model's dense "
    "perplexity on the same test blocks; details_relufied.*_vs_relufied against the dense ReLU-fied model's"
)


@torch.no_grad()
def zero_fraction(model: Any, chunks: dict[str, torch.Tensor]) -> float:
    """The exact-zero fraction of every dense FFN's gate activation over ``chunks`` ({domain: (N, T)})."""
    from lmbricks.analysis import find_ffns

    counts = [0, 0]

    def hook(_mod: Any, _inp: Any, out: torch.Tensor) -> None:
        counts[0] += int((out == 0).sum())
        counts[1] += out.numel()

    handles = [b.act.register_forward_hook(hook) for b in find_ffns(model)]
    try:
        for ids in chunks.values():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return counts[0] / max(counts[1], 1)


def relufied_only(
    args: Any, cfg: Any, ks: list[int], clock: Any, rounds: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """``--relufied-only``: the ReLU-fied arm alone; the source model is evaluated dense, not cut.

    The source's keys (``ffn_speedup_25pct``, ``ppl_change_50pct_healed``, ...) are present and null:
    they were not measured by this run (a full run measures both arms).

    Returns:
        The JSON: the relufied keys, the source's keys (null), ``details_relufied`` and the settings.
    """
    from lmbricks.analysis.corpus import domain_chunks, perplexities
    from lmbricks.data.registry import DEFAULT_DOMAINS
    from lmbricks.hub import load_hf_model

    clock.start("source: dense perplexity")
    source, tokenizer = load_hf_model(args.model)
    evals = domain_chunks(tokenizer, DEFAULT_DOMAINS, "test", settings["eval_chunks"], settings["eval_seq_len"])
    source_ppl = perplexities(source, evals)
    del source
    arm = relufied_arm(args, cfg, ks, evals, source_ppl, clock, rounds, settings)
    clock.stop()
    source_keys = ("heal_tokens", "ffn_speedup_25pct", "ffn_speedup_50pct", "model_speedup_25pct",
                   "ppl_change_50pct_oracle", "ppl_change_50pct_router", "ppl_change_50pct_healed",
                   "ppl_change_25pct_healed")  # fmt: skip
    return {
        **arm["keys"],
        **dict.fromkeys(source_keys),
        "source_keys_note": "null: not measured by this run (--relufied-only: the source is evaluated dense only)",
        "heal_budget_minutes": settings["minutes"],
        "clock": args.clock,
        "details_relufied": arm["details_relufied"],
        "details": {
            "model": args.model,
            "source_dense_ppl": source_ppl,
            "experts": ks[2],
            "split": args.split,
            "router": args.router,
            "eval_tokens_per_domain": settings["eval_chunks"] * settings["eval_seq_len"],
            "heal_settings": settings,
            "rounds": {"processes_per_arm": rounds},
            "threads": args.threads or torch.get_num_threads(),
            "stages": clock.stages,
        },
    }


def relufied_speeds(t: dict[str, dict[str, float]], ks: list[int]) -> dict[str, Any]:
    """Speedups per phase against the faster dense anchor, each K at its faster zero-skipping setting.

    Args:
        t: ``{phase: {arm: seconds}}`` with arms ``dense``, ``dense_fused`` (FFN phases), ``K=k``, ``K=k+zs``.
        ks: the Ks.

    Returns:
        ``{"anchors": {phase: arm}, "zero_skip_used": {phase: {K=k: bool}}, phase: {arm_ms...,
        K=k_speedup, K=k_speedup_no_zs, K=k_speedup_zs}}``.
    """
    out: dict[str, Any] = {"anchors": {}, "zero_skip_used": {}}
    for phase, arms in t.items():
        anchor = min((a for a in ("dense", "dense_fused") if a in arms), key=arms.__getitem__)
        out["anchors"][phase] = anchor
        out[phase] = {f"{a}_ms": 1e3 * s for a, s in arms.items()}
        for k in ks:
            plain, skip = f"K={k}", f"K={k}+zs"
            out["zero_skip_used"].setdefault(phase, {})[plain] = arms[skip] < arms[plain]
            out[phase][f"{plain}_speedup"] = arms[anchor] / min(arms[plain], arms[skip])
            out[phase][f"{plain}_speedup_no_zs"] = arms[anchor] / arms[plain]
            out[phase][f"{plain}_speedup_zs"] = arms[anchor] / arms[skip]
    return out


def relufied_arm(
    args: Any, cfg: Any, ks: list[int], evals: dict[str, torch.Tensor], source_ppl: dict[str, float],
    clock: Any, rounds: int, settings: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Convert, evaluate, time and heal ``args.relufied`` (see the module docstring).

    Args:
        args: bench/moefy.py's arguments.
        cfg: the MoefyConfig the source was converted with.
        ks: [K at 25%, K at 50%, E].
        evals: the source's test blocks ({domain: (N, T)}).
        source_ppl: the source SwiGLU model's dense perplexity on them.
        clock: bench/moefy.py's stage clock.
        rounds: processes per timed arm.
        settings: the healing settings (``moefy_workers.heal_case``).

    Returns:
        ``{"keys": the headline keys, "details_relufied": ...}``.
    """
    from moefy_workers import activation_threshold, load_dense, save_ffn

    from lmbricks.analysis import find_ffns
    from lmbricks.moefy import moefied_layers, moefy_model
    from lmbricks.moefy.evaluate import ppl_curve
    from lmbricks.moefy.io import save_moefied
    from moefy import heal_run, timings

    k25, k50, _ = ks
    clock.start("relufied: load, sparsity, convert")
    dense, tokenizer = load_dense(args.relufied)
    sparsity = zero_fraction(dense, evals)
    model, _ = load_dense(args.relufied)
    info = moefy_model(model, tokenizer, cfg)
    clock.start("relufied: perplexity, oracle and router")
    before = ppl_curve(model, evals, [k25, k50], ("oracle", "router"))
    with tempfile.TemporaryDirectory(prefix="bench-moefy-relufied-") as tmp:
        directory = str(save_moefied(model, Path(tmp) / "moefied", cfg, info.permutations, tokenizer=tokenizer))
        block = find_ffns(dense)[len(find_ffns(dense)) // 2]
        save_ffn(directory, block.module, moefied_layers(model)[block.layer], block.hidden)
        del dense, model, block
        clock.start("relufied: timing (fresh processes)")
        phases = tuple(p for p in RELUFIED_PHASES if p in args.relufied_phases)  # ffn_prefill always
        phases = phases if "ffn_prefill" in phases else ("ffn_prefill", *phases)
        t = timings(directory, args.relufied, ks, rounds, args.threads, args.clock, args.quick, phases, True)
        clock.start("relufied: healing (a fresh process)")
        healed = heal_run(directory, args.relufied, settings, args.threads)
    speeds = relufied_speeds(t, ks)
    return _report(args, info, before, healed, speeds, ks, source_ppl, sparsity, activation_threshold(args.relufied))


def _report(
    args: Any, info: Any, before: Any, healed: dict[str, Any], speeds: dict[str, Any], ks: list[int],
    source_ppl: dict[str, float], sparsity: float, threshold: float,
) -> dict[str, Any]:  # fmt: skip
    """The arm's headline keys (against the source) and its details (against both references)."""
    from moefy import mean_change, per_domain_change

    k25, k50, _ = ks
    relu_ppl, after = before.dense_ppl, healed.get("after", {})

    def point(mode: str, k: int) -> dict[str, float] | None:
        found = before.find(mode, k)
        return None if found is None else found.ppl

    both = {f"{mode}_{k}": point(mode, k) for mode in ("oracle", "router") for k in (k50, k25)}
    both |= {f"healed_{k}": after.get(str(k)) for k in (k50, k25)}
    keys = {
        "relufied_sparsity": sparsity,
        "relufied_ppl_change": mean_change(relu_ppl, source_ppl),
        "ppl_change_50pct_healed_relufied": mean_change(after.get(str(k50)), source_ppl),
        "ppl_change_25pct_healed_relufied": mean_change(after.get(str(k25)), source_ppl),
        "ffn_speedup_25pct_relufied": speeds["ffn_prefill"][f"K={k25}_speedup"],
        "heal_tokens_relufied": healed.get("healing", {}).get("tokens"),
        "relufied_reference": REFERENCE,
    }
    return {
        "keys": keys,
        "details_relufied": {
            "model": str(args.relufied),
            "fatrelu_threshold": threshold,
            "dense_ppl": relu_ppl,
            "per_domain_change_vs_source": per_domain_change(relu_ppl, source_ppl),
            "ppl_change_vs_source": {n: mean_change(p, source_ppl) for n, p in both.items()},
            "ppl_change_vs_relufied": {n: mean_change(p, relu_ppl) for n, p in both.items()},
            "ffn_speedup_50pct": speeds["ffn_prefill"][f"K={k50}_speedup"],
            "speeds": speeds,
            "healing": healed.get("healing", {}),
            "healing_teacher": "the dense ReLU-fied model (FATReLU)",
            "dense_ppl_after_healing": healed.get("dense_ppl"),
            "calibration_oracle_mass_share_at_50pct": sum(info.oracle_share) / max(len(info.oracle_share), 1),
            "router_recall_at_50pct": sum(info.router_recall) / max(len(info.router_recall), 1),
            "timed_phases": [p for p in RELUFIED_PHASES if p in speeds],
        },
    }
