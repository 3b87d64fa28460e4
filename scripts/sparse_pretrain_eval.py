"""The measurements of ``scripts/sparse_pretrain.py`` on one trained arm, and the plots of all arms.

Each arm's final checkpoint is a Hugging Face directory (``hidden_act`` silu / relu / relu2), so the
analyses run on it exactly as ``lmbricks analyze sparsity``, ``lmbricks analyze neurons`` and
``lmbricks moefy`` do (the same library functions, on a model loaded in fp32).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: Magnitudes |a| below which an activation counts as "near zero" (SwiGLU is never exactly zero).
NEAR_ZERO = (1e-3, 1e-2)
MASKED = (0.0, 0.5, 0.7, 0.8, 0.9)


def bits_per_byte(losses: Mapping[str, float], blocks: Mapping[str, Tensor], tokenizer: Any) -> dict[str, float]:
    """Per-domain bits per byte of next-token losses on packed blocks.

    Args:
        losses: ``{domain: mean nats per predicted token}`` (a ``"mean"`` key is ignored).
        blocks: ``{domain: (N, T) token ids}`` the losses were measured on.
        tokenizer: decodes the blocks back to text (its UTF-8 length is the byte count).

    Returns:
        ``{domain: bits per byte}`` = nats x tokens / (ln 2 x bytes), and ``"mean"`` over domains.
    """
    out: dict[str, float] = {}
    for d, ids in blocks.items():
        n_bytes = sum(len(tokenizer.decode(row.tolist()).encode("utf-8")) for row in ids)
        out[d] = losses[d] * ids.numel() / (math.log(2) * max(n_bytes, 1))
    out["mean"] = sum(out.values()) / max(len(out), 1)
    return out


@torch.no_grad()
def activation_zeros(model: Any, blocks: Mapping[str, Tensor], near: Sequence[float] = NEAR_ZERO) -> dict[str, Any]:
    """Shares of the FFN intermediate activations that are exactly zero, or below small magnitudes.

    Args:
        model: a dense Hugging Face causal LM (eval mode).
        blocks: ``{domain: (N, T) token ids}``.
        near: magnitudes ``eps``; the share of ``|a| < eps`` is reported for each.

    Returns:
        ``{"exact_zero": mean over layers, "exact_zero_per_layer": [...], "below": {str(eps): mean},
        "below_per_layer": {str(eps): [...]}}`` over every token of every domain.
    """
    from lmbricks.analysis.ffn import find_ffns
    from lmbricks.analysis.hooks import tap_activations

    ffns = find_ffns(model)
    zeros = torch.zeros(len(ffns), dtype=torch.float64)
    below = torch.zeros(len(near), len(ffns), dtype=torch.float64)
    seen = torch.zeros(len(ffns), dtype=torch.float64)

    def read(layer: int, a: Tensor) -> None:
        mag = a.float().abs()
        zeros[layer] += float((mag == 0).sum())
        for j, eps in enumerate(near):
            below[j, layer] += float((mag < eps).sum())
        seen[layer] += a.numel()

    with tap_activations(ffns, read):
        for ids in blocks.values():
            model(input_ids=ids)
    z = (zeros / seen).tolist()
    b = {f"{eps:g}": (below[j] / seen).tolist() for j, eps in enumerate(near)}
    return {
        "exact_zero": sum(z) / len(z),
        "exact_zero_per_layer": z,
        "below": {k: sum(v) / len(v) for k, v in b.items()},
        "below_per_layer": b,
    }


def masking(model: Any, tokenizer: Any, n_chunks: int, seq_len: int) -> dict[str, Any]:
    """The per-token masking curve and CETT of ``lmbricks analyze sparsity`` (norm metric, test split).

    Returns:
        ``base_ppl``, ``curve`` (``{str(rho): {domain: ppl}}``), ``mean_change`` (``{str(rho): mean
        relative change}``), ``top_share_norm`` and the CETT-0.2 sparsity and perplexities.
    """
    from lmbricks.analysis.sparsity import SparsityConfig, analyze_sparsity, masking_changes

    cfg = SparsityConfig(sparsities=MASKED, metrics=("norm",), n_chunks=n_chunks, seq_len=seq_len, precision="fp32")
    result = analyze_sparsity(model, tokenizer, cfg)
    changes = masking_changes(result, "norm")
    cett_change = {d: result.cett_ppl[d] / result.base_ppl[d] - 1.0 for d in result.cett_ppl}
    return {
        "base_ppl": result.base_ppl,
        "curve": result.curve["norm"],
        "mean_change": changes["mean_change"],
        "top_share_norm": changes["top_share_norm"],
        "cett_sparsity_per_layer": result.cett_sparsity,
        "cett_mean_sparsity": result.cett_mean_sparsity,
        "cett_mean_change": sum(cett_change.values()) / max(len(cett_change), 1),
    }


def neurons(model: Any, tokenizer: Any, n_chunks: int, seq_len: int, domains: Sequence[str]) -> dict[str, Any]:
    """``lmbricks analyze neurons`` on ``domains`` (2% of the neurons per layer and domain, corr statistic).

    Returns:
        ``summary`` (own-domain mean, other-domain mean, random control mean), ``change`` and
        ``random_change`` (``{pruned domain: {evaluated domain: relative change}}``).
    """
    from lmbricks.analysis.neurons import NeuronConfig, analyze_neurons

    result = analyze_neurons(
        model, tokenizer, NeuronConfig(tuple(domains), n_chunks=n_chunks, seq_len=seq_len, precision="fp32")
    )
    full = result.to_dict()
    return {k: full[k] for k in ("summary", "change", "random_change")}


def moefication(path: Path, experts: int, n_chunks: int, seq_len: int) -> dict[str, Any]:
    """``lmbricks moefy``'s conversion (co-activation split, linear router), no healing.

    Perplexity change at 50% and 25% of the experts per token, with the router and with the
    oracle (the experts of largest output norm, the split's best case).

    Returns:
        ``{"experts": E, "<mode>_<pct>pct": mean relative change, "by_domain": {...}}``.
    """
    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.hub import load_hf_model
    from lmbricks.moefy.config import make_config
    from lmbricks.moefy.convert import moefy_model
    from lmbricks.moefy.evaluate import ppl_curve

    lm, tok = load_hf_model(path)
    config = make_config(experts=experts, top_k=experts // 2, calib_chunks=n_chunks, calib_seq_len=seq_len)
    moefy_model(lm, tok, config)
    evals = domain_chunks(tok, sorted(_domains()), "test", n_chunks, seq_len)
    ks = [experts // 2, experts // 4]
    curve = ppl_curve(lm, evals, ks, ("oracle", "router"))
    out: dict[str, Any] = {"experts": experts, "dense_ppl": curve.dense_ppl, "by_domain": {}}
    for mode in ("oracle", "router"):
        for k in ks:
            point = curve.find(mode, k)
            assert point is not None
            key = f"{mode}_{round(100 * k / experts)}pct"
            out[key] = curve.change(point)
            out["by_domain"][key] = {d: point.ppl[d] / curve.dense_ppl[d] - 1.0 for d in point.ppl}
    return out


def _domains() -> tuple[str, ...]:
    from lmbricks.data.registry import DEFAULT_DOMAINS

    return DEFAULT_DOMAINS


def analyse_arm(
    args: Any, activation: str, tokenizer: Any, val: Mapping[str, Tensor], val_losses: Sequence[Any]
) -> dict[str, Any]:
    """Every measurement of one trained arm (cached in ``OUT/<arm>/analysis.json``).

    Args:
        args: the script's arguments (``out``, ``val_blocks``, ``seq_len``, ``moefy_experts``, ...).
        activation: the arm.
        tokenizer: the arms' tokenizer.
        val: ``{domain: (N, T)}`` validation blocks.
        val_losses: the arm's validation curve ``[[step, {domain: loss}], ...]`` (its last point is scored).

    Returns:
        ``{"val_bits_per_byte", "activations", "masking", "neurons", "moefy"}``.
    """
    import time

    from lmbricks.hub import load_hf_model
    from lmbricks.train.checkpoint import list_checkpoints

    name = "analysis.json" if args.at_step is None else f"analysis-step{args.at_step}.json"
    done = Path(args.out) / activation / name
    if done.exists() and not args.fresh:
        return dict(json.loads(done.read_text()))
    cpu0 = time.process_time()
    points = dict(list_checkpoints(Path(args.out) / activation / "run"))
    final = points[args.at_step] if args.at_step is not None else points[max(points)]
    losses = val_losses[-1][1]
    lm, _ = load_hf_model(final)
    n, t = args.analysis_blocks, args.analysis_seq
    out: dict[str, Any] = {
        "val_bits_per_byte": bits_per_byte(losses, val, tokenizer),
        "activations": activation_zeros(lm, val),
        "masking": masking(lm, tokenizer, n, t),
        "neurons": neurons(lm, tokenizer, n, t, args.neuron_domains),
    }
    if not args.skip_moefy:
        out["moefy"] = moefication(final, args.moefy_experts, n, t)
    out["analysis_cpu_seconds"] = round(time.process_time() - cpu0, 1)
    done.write_text(json.dumps(out))
    return out


def plot_results(summary: Mapping[str, Any], img: Path) -> list[Path]:
    """``sparse_pretrain_loss.png`` (training loss vs tokens) and ``sparse_pretrain_masking.png``.

    Returns:
        The written paths.
    """
    from lmbricks.report import line_chart

    img.mkdir(parents=True, exist_ok=True)
    loss, mask = {}, {}
    for arm, r in summary["arms"].items():
        per_step = r["tokens"] / max(r["train_curve"][-1][0], 1)
        loss[arm] = ([s * per_step / 1e3 for s, _ in r["train_curve"]], [v for _, v in r["train_curve"]])
        change = r["analysis"]["masking"]["mean_change"]
        mask[arm] = ([100 * float(k) for k in change], [100 * v for v in change.values()])
    return [
        line_chart(
            img / "sparse_pretrain_loss.png",
            loss,
            "Training loss (every step)",
            "training tokens (thousands)",
            "nats per token",
        ),
        line_chart(
            img / "sparse_pretrain_masking.png",
            mask,
            "Per-token masking of the lowest FFN activations",
            "% of neurons masked per token (norm metric)",
            "mean perplexity change (%)",
        ),
    ]


def _pct(v: float) -> str:
    return f"{100 * v:+.1f}%"


TABLE_HEADER = (
    "| arm | tokens | val loss (nats) | val bits/byte | loss vs swiglu | exact zeros | abs(a) < 0.01 "
    "| masked 50% | masked 70% | masked 80% | masked 90% | own-domain neurons | other domains "
    "| MoE oracle 50% | MoE oracle 25% | MoE router 50% | MoE router 25% |"
)


def table_rows(summary: Mapping[str, Any]) -> list[str]:
    """The Markdown table of docs/emergent-bricks.md ("Sparse pre-training"), one row per arm.

    Changes are relative (``+5.0%``); the loss column compares the arm's final mean validation loss
    with the SwiGLU arm's (when present).
    """
    arms = summary["arms"]
    ref = arms["swiglu"]["val_curve"][-1][1]["mean"] if "swiglu" in arms else math.nan
    rows = [TABLE_HEADER, "|" + "---|" * TABLE_HEADER.count(" |")]
    for arm, r in arms.items():
        a, loss = r["analysis"], r["val_curve"][-1][1]["mean"]
        m, n, moe = a["masking"]["mean_change"], a["neurons"]["summary"], a.get("moefy", {})
        cells = [
            arm,
            f"{r['tokens']:,}",
            f"{loss:.3f}",
            f"{a['val_bits_per_byte']['mean']:.3f}",
            _pct(loss / ref - 1),
            f"{100 * a['activations']['exact_zero']:.1f}%",
            f"{100 * a['activations']['below']['0.01']:.1f}%",
            *(_pct(m[k]) for k in ("0.5", "0.7", "0.8", "0.9")),
            _pct(n["diagonal_mean"]),
            _pct(n["off_diagonal_mean"]),
            *(
                _pct(moe[k]) if k in moe else "-"
                for k in ("oracle_50pct", "oracle_25pct", "router_50pct", "router_25pct")
            ),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows
