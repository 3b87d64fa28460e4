"""Tour section ``moe``: a dense LM against an 8-expert top-2 MoE and a Switch top-1 MoE.

The three arms share everything but the feed-forward block: the same packed training blocks in the
same order (one seed), the same token budget, optimiser and schedule, and the same **active**
feed-forward parameters per token. With expert width I:

- ``dense``: a SwiGLU of width 2I in every layer;
- ``top2``: 8 SwiGLU experts of width I, softmax top-2 (Mixtral): 2 x I active;
- ``switch``: 8 SwiGLU experts of width 2I, Switch top-1: 2I active.

The MoE arms add only their (E, H) router per layer (counted in the tables). The functions here are
also what ``scripts/moe_experiment.py`` runs at a larger budget (docs/moe.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.tour.run import SummaryRow, TourContext

ARMS: tuple[str, ...] = ("dense", "top2", "switch")
ARM_LABELS = {"dense": "dense SwiGLU", "top2": "8 experts, top-2", "switch": "8 experts, Switch top-1"}
DOMAINS: tuple[str, ...] = DEFAULT_DOMAINS
# Differences in final validation loss below this are reported as no difference (single seed, tiny budgets).
NOISE_NATS = 0.02


def arm_models(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    expert_intermediate: int,
    num_experts: int = 8,
    num_kv_heads: int | None = None,
    tie_embeddings: bool = True,
) -> dict[str, dict[str, Any]]:
    """``lmbricks.nn.LMConfig`` mappings of the three arms with equal active FFN parameters.

    Args:
        hidden_size, num_layers, num_heads, num_kv_heads: the shared trunk.
        expert_intermediate: I, the width of a top-2 expert; the dense FFN and the Switch experts
            are 2I wide (dense width = top_k x expert width, Switch expert width = dense width).
        num_experts: E of both MoE arms.
        tie_embeddings: share the embedding with the output head (the head dominates at this size).

    Returns:
        ``{"dense": {...}, "top2": {...}, "switch": {...}}``, ready for a training config's ``model``.
    """
    trunk: dict[str, Any] = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads or num_heads,
        "tie_embeddings": tie_embeddings,
        "intermediate_size": 2 * expert_intermediate,
    }
    return {
        "dense": dict(trunk),
        "top2": {
            **trunk,
            "moe": {"num_experts": num_experts, "top_k": 2, "intermediate_size": expert_intermediate},
        },
        "switch": {
            **trunk,
            "moe": {
                "num_experts": num_experts,
                "top_k": 1,
                "router": "switch",
                "intermediate_size": 2 * expert_intermediate,
            },
        },
    }


def arm_train_config(
    model: dict[str, Any],
    *,
    tokenizer: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    eval_every: int,
    max_tokens_per_domain: int | None = None,
    domains: Sequence[str] = DOMAINS,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``lmbricks train`` mapping of one arm (a checkpoint every ``eval_every`` steps, all kept).

    Returns:
        A dict that :func:`lmbricks.train.parse_config` validates (and that dumps as YAML).
    """
    return {
        "model": model,
        "tokenizer": tokenizer,
        "data": {"domains": list(domains), "seq_len": seq_len, "max_tokens": max_tokens_per_domain},
        "steps": steps,
        "batch_size": batch_size,
        "optim": {"lr": lr, "weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": max(1, steps // 20), "min_lr_ratio": 0.1},
        "moe_loss": {"aux_loss_coef": 1e-2, "z_loss_coef": 1e-3},
        "precision": "fp32",
        "checkpoint_every": eval_every,
        "keep_checkpoints": steps // eval_every + 1,
        "seed": seed,
    }


def text_blocks(tokenizer: Any, domains: Sequence[str], split: str, seq_len: int, max_bytes: int) -> dict[str, Tensor]:
    """Packed (N, seq_len) token blocks per domain from the first ``max_bytes`` of a split."""
    from lmbricks.data import domain_text
    from lmbricks.data.tokens import token_chunks

    out = {}
    for d in domains:
        out[d] = token_chunks(tokenizer, [domain_text(d, split, max_bytes)], seq_len)  # (N, T)
    return out


def validation_blocks(
    tokenizer: Any, domains: Sequence[str], seq_len: int, blocks_per_domain: int
) -> dict[str, Tensor]:
    """The first ``blocks_per_domain`` packed blocks of each domain's validation split (N, seq_len)."""
    from lmbricks.data import load_texts
    from lmbricks.data.tokens import token_chunks

    return {
        d: token_chunks(tokenizer, load_texts(d, "validation"), seq_len, blocks_per_domain * seq_len) for d in domains
    }


@torch.no_grad()
def validation_losses(model: Any, blocks: dict[str, Tensor], batch_size: int = 8) -> dict[str, float]:
    """Mean next-token loss (nats) per domain, and ``"mean"`` over domains (eval mode).

    Args:
        model: an ``lmbricks.nn.LM``.
        blocks: ``{domain: (N, T) long}`` token blocks.
        batch_size: blocks per forward pass.

    Returns:
        ``{domain: loss, ..., "mean": mean of the domain losses}``.
    """
    from lmbricks.nn.model import lm_loss

    model.eval()
    out: dict[str, float] = {}
    for d, ids in blocks.items():
        total, n = 0.0, 0
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            total += float(lm_loss(model(chunk).logits, chunk)) * len(chunk)  # equal-length blocks
            n += len(chunk)
        out[d] = total / max(n, 1)
    out["mean"] = sum(out.values()) / max(len(out), 1)
    return out


def domain_expert_load(model: Any, blocks: dict[str, Tensor]) -> dict[str, Any]:
    """Which experts each domain's tokens choose, read with ``lmbricks.trace``.

    Args:
        model: an ``lmbricks.nn.LM`` with MoE layers.
        blocks: ``{domain: (N, T)}`` token blocks (each block is traced as one document).

    Returns:
        ``{"layers": [...], "share": {domain: (L, E) pair shares}, "max_over_mean": per layer over all
        domains, "mutual_information_bits": I(domain; expert) per layer, "domain_entropy_bits": H(domain)}``.
    """
    from lmbricks.trace import capture_routing, domain_histograms, load_stats

    model.eval()
    docs = [row.tolist() for ids in blocks.values() for row in ids]
    doms = [d for d, ids in blocks.items() for _ in range(len(ids))]
    trace = capture_routing(model, docs, doms)
    hist = domain_histograms(trace)  # {domain: (L, E) counts, "all": ...}
    counts = torch.stack([hist[d] for d in blocks]).double()  # (D, L, E)
    share = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    return {
        "layers": trace.layers,
        "share": {d: share[i].tolist() for i, d in enumerate(blocks)},
        "max_over_mean": [s.max_over_mean for s in load_stats(hist["all"])],
        "mutual_information_bits": [mutual_information_bits(counts[:, i]) for i in range(counts.shape[1])],
        "domain_entropy_bits": _entropy_bits(counts[:, 0].sum(-1)),
    }


def mutual_information_bits(counts: Tensor) -> float:
    """I(row; column) in bits of a (D, E) contingency table of counts (0 when empty)."""
    total = float(counts.sum())
    if total == 0:
        return 0.0
    p = counts.double() / total  # (D, E)
    outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
    nz = p > 0
    return float((p[nz] * (p[nz] / outer[nz]).log2()).sum())


def _entropy_bits(counts: Tensor) -> float:
    p = counts.double() / counts.sum().clamp(min=1)
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def load_weights(path: Path) -> Any:
    """An ``lmbricks.nn.LM`` from a checkpoint directory, fp32, without loading its tokenizer.

    ``lmbricks.load_model`` also reads the tokenizer (about a second each time); scoring a run's
    checkpoints needs only the weights.
    """
    from lmbricks.checkpoint import CheckpointReader
    from lmbricks.nn.hf import load_hf_weights
    from lmbricks.nn.load import lm_config_of, read_config
    from lmbricks.nn.model import LM

    hf = read_config(path)
    cfg = lm_config_of(hf)
    with torch.device("meta"):
        model = LM(cfg)
    model.to_empty(device="cpu")
    with CheckpointReader(path) as reader:
        model.float()
        load_hf_weights(model, reader.get, set(reader.keys()), str(hf.get("model_type")))
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval()


def run_arm(
    cfg: Any,
    run_dir: Path,
    val_blocks: dict[str, Tensor],
    chunks: Tensor | None = None,
    tokenizer: Any = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    keep_run: bool = True,
) -> dict[str, Any]:
    """Train one arm with ``lmbricks.train``, then score every checkpoint on the validation blocks.

    Args:
        cfg: a validated :class:`lmbricks.train.TrainConfig` (checkpoints are the evaluation points).
        run_dir: the run directory (overwritten).
        val_blocks: ``{domain: (N, T)}`` held-out blocks.
        chunks: pre-packed training blocks (default: built from ``cfg.data``).
        tokenizer: the tokenizer (default: ``cfg.tokenizer``).
        on_step: progress callback, as for :func:`lmbricks.train.train`.
        keep_run: keep the run directory (checkpoints, log); else delete it after scoring.

    Returns:
        A JSON-able dict: parameter counts, training wall time and tokens/s, the training-loss curve,
        the validation curve ``[[step, {domain: loss, "mean": loss}], ...]`` and, for MoE arms, the
        per-domain expert load of the final model.
    """
    from lmbricks.train import train
    from lmbricks.train.checkpoint import list_checkpoints
    from lmbricks.train.plan import count_parameters

    start = time.perf_counter()
    result = train(cfg, run_dir, force=True, chunks=chunks, tokenizer=tokenizer, on_step=on_step, report=False)
    train_s = time.perf_counter() - start
    val_curve: list[list[Any]] = []
    model: Any = None
    for step, path in list_checkpoints(run_dir):
        model = load_weights(path)
        val_curve.append([step, validation_losses(model, val_blocks)])
    assert model is not None, f"{run_dir}: training left no checkpoint"
    params = count_parameters(model.cfg).to_dict()
    rates = [r["tokens_per_s"] for r in result.records[1:]] or [r["tokens_per_s"] for r in result.records]
    out: dict[str, Any] = {
        "params": params,
        "train_seconds": round(train_s, 2),
        "tokens": result.records[-1]["tokens"] if result.records else 0,
        "tokens_per_s": sorted(rates)[len(rates) // 2] if rates else 0.0,
        "train_curve": [[r["step"], r["loss"]] for r in result.records],
        "val_curve": val_curve,
    }
    if model.cfg.moe is not None:
        out["expert_load"] = domain_expert_load(model, val_blocks)
        out["train_load_max_over_mean"] = result.records[-1].get("expert_load_max_over_mean")
    if not keep_run:
        shutil.rmtree(run_dir, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- reporting


def val_curve_series(
    results: dict[str, dict[str, Any]], key: str = "mean"
) -> dict[str, tuple[list[float], list[float]]]:
    """``{arm label: (tokens seen, validation loss)}`` for :func:`lmbricks.report.line_chart`."""
    series = {}
    for arm, r in results.items():
        tokens_per_step = r["tokens"] / max(r["train_curve"][-1][0], 1) if r["train_curve"] else 0.0
        xs = [step * tokens_per_step / 1e3 for step, _ in r["val_curve"]]
        series[ARM_LABELS.get(arm, arm)] = (xs, [v[key] for _, v in r["val_curve"]])
    return series


def load_heatmap_rows(load: dict[str, Any]) -> tuple[list[list[float]], list[str], list[str]]:
    """(matrix, row labels, column labels) of per-domain expert shares, one row per domain and layer."""
    rows, labels = [], []
    for d, per_layer in load["share"].items():
        for layer, shares in zip(load["layers"], per_layer, strict=True):
            rows.append(shares)
            labels.append(f"{d} L{layer}")
    cols = [f"e{e}" for e in range(len(rows[0]))] if rows else []
    return rows, labels, cols


def summary_table(results: dict[str, dict[str, Any]]) -> tuple[list[list[Any]], list[str]]:
    """One row per arm: parameters, tokens, time, final validation loss overall and per domain."""
    domains = [d for d in next(iter(results.values()))["val_curve"][-1][1] if d != "mean"]
    rows = []
    for arm, r in results.items():
        final = r["val_curve"][-1][1]
        p = r["params"]
        rows.append(
            [
                ARM_LABELS.get(arm, arm),
                f"{p['total'] / 1e6:.2f} M",
                f"{(p['dense_ffn'] + p['active_experts'] + p['routers']) / 1e6:.3f} M",
                r["tokens"],
                f"{r['train_seconds']:.0f}",
                f"{final['mean']:.3f}",
                *[f"{final[d]:.3f}" for d in domains],
            ]
        )
    cols = ["arm", "total params", "active FFN+router", "tokens", "train s", "val loss", *domains]
    return rows, cols


def interpretation(results: dict[str, dict[str, Any]]) -> str:
    """Sentences computed from the numbers: who ends lowest and by how much, the cost, how routing splits."""
    final = {arm: r["val_curve"][-1][1]["mean"] for arm, r in results.items()}
    best = min(final, key=lambda a: final[a])
    text = (
        f"After {results[best]['tokens']:,} training tokens the {ARM_LABELS.get(best, best)} model has the lowest "
        f"validation loss ({final[best]:.3f} nats/token)"
    )
    others = [a for a in final if a != best]
    spread = max(final.values()) - final[best]
    if others and spread < NOISE_NATS:
        text += (
            f"; all arms end within {spread:.3f} nats of each other, less than the {NOISE_NATS} nats taken here as "
            "the noise of a single short run: no difference at this budget"
        )
    elif others:
        text += "; " + ", ".join(
            f"{ARM_LABELS.get(a, a)} is {final[a] - final[best]:+.3f} "
            f"({math.exp(final[a] - final[best]) - 1:+.1%} perplexity)"
            for a in others
        )
    text += "."
    if "dense" in results and len(results) > 1:
        t_dense = results["dense"]["train_seconds"]
        text += (
            " Training took "
            + " and ".join(
                f"{results[a]['train_seconds'] / t_dense:.2f}x ({ARM_LABELS.get(a, a)})"
                for a in results
                if a != "dense"
            )
            + " the dense model's wall time."
        )
    moe = {a: r["expert_load"] for a, r in results.items() if "expert_load" in r}
    if moe:
        parts = []
        for a, load in moe.items():
            mi = load["mutual_information_bits"]
            top = max(range(len(mi)), key=lambda i: mi[i])
            parts.append(
                f"{ARM_LABELS.get(a, a)} routing carries up to {mi[top]:.2f} of the "
                f"{load['domain_entropy_bits']:.2f} bits of domain identity (layer {load['layers'][top]}), its "
                f"busiest expert takes {max(load['max_over_mean']):.2f}x the mean load"
            )
        text += " " + "; ".join(parts) + " (1.00x = perfectly balanced)."
    return text


# ----------------------------------------------------------------------------- the tour section


def _section_plan(quick: bool) -> dict[str, Any]:
    """Budgets of the tour's comparison: 32 steps of 8 x 64 tokens per arm in full mode, 12 steps of
    4 x 64 in quick mode (1-thread CPU time measured: ~0.7 s per 512-token step of one arm, most of
    it the 49152-word output head)."""
    return {
        "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "expert_intermediate": 64},
        "steps": 12 if quick else 32,
        "eval_every": 6 if quick else 8,
        "batch_size": 4 if quick else 8,
        "seq_len": 64,
        "lr": 3e-3,
        "train_bytes": 30_000 if quick else 60_000,
        "val_bytes": 3_000 if quick else 6_000,
        "val_blocks": 3 if quick else 8,
        "seed": 0,
    }


def compare_arms(
    tokenizer: Any,
    tokenizer_ref: str,
    work_dir: Path,
    plan: dict[str, Any],
    domains: Sequence[str] = DOMAINS,
    log: Callable[[str], None] = print,
    train_chunks: Tensor | None = None,
    val_blocks: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Train the three arms at the budget of ``plan`` on pre-packed blocks and score them.

    Args:
        tokenizer: the tokenizer whose ids the blocks hold.
        tokenizer_ref: its reference, written into the training configs.
        work_dir: where the (deleted afterwards) run directories go.
        plan: as :func:`_section_plan` returns.
        domains: training and validation domains.
        log: progress lines.
        train_chunks: (N, seq_len) training blocks (default: the first ``train_bytes`` of each domain).
        val_blocks: held-out blocks (default: the validation split).

    Returns:
        ``{"plan": plan, "arms": {arm: run_arm(...)}}``.
    """
    from lmbricks.train import parse_config

    seq_len = plan["seq_len"]
    if train_chunks is None:
        parts = text_blocks(tokenizer, domains, "train", seq_len, plan["train_bytes"])
        train_chunks = torch.cat(list(parts.values()))
    if val_blocks is None:  # the first blocks of each domain's validation split
        held_out = text_blocks(tokenizer, domains, "validation", seq_len, plan["val_bytes"])
        val_blocks = {d: b[: plan["val_blocks"]] for d, b in held_out.items()}
    shape = plan["model"]
    models = arm_models(
        shape["hidden_size"],
        shape["num_layers"],
        shape["num_heads"],
        shape["expert_intermediate"],
        num_kv_heads=shape["num_kv_heads"],
    )
    arms = {}
    for arm, model in models.items():
        mapping = arm_train_config(
            model,
            tokenizer=tokenizer_ref,
            steps=plan["steps"],
            batch_size=plan["batch_size"],
            seq_len=seq_len,
            lr=plan["lr"],
            eval_every=plan["eval_every"],
            domains=domains,
            seed=plan["seed"],
        )
        cfg = parse_config(mapping, f"moe tour arm {arm}")
        log(f"moe: training {arm} ({plan['steps']} steps)")
        arms[arm] = run_arm(cfg, work_dir / arm, val_blocks, chunks=train_chunks, tokenizer=tokenizer, keep_run=False)
    return {"plan": plan, "arms": arms}


def moe_section(ctx: TourContext) -> list[SummaryRow]:
    """Dense vs top-2 MoE vs Switch MoE, trained live at a tiny budget; cached in ``ctx.cache_dir``."""
    from lmbricks.report import heatmap, line_chart

    plan = _section_plan(ctx.quick)
    key = hashlib.sha256(json.dumps({"plan": plan, "model": ctx.model_ref}, sort_keys=True).encode()).hexdigest()[:12]
    cache = ctx.cache_dir / f"moe-compare-{key}.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        ctx.log("moe: reusing cached comparison")
    else:
        _, tokenizer = ctx.model_and_tokenizer()
        data = compare_arms(tokenizer, str(ctx.model_path), ctx.cache_dir / "moe-runs", plan, log=ctx.log)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(cache)
        shutil.rmtree(ctx.cache_dir / "moe-runs", ignore_errors=True)
    results = data["arms"]
    ctx.results["moe"] = data

    ctx.report.section(
        "Dense vs mixture of experts",
        f"Three small LMs (hidden {plan['model']['hidden_size']}, {plan['model']['num_layers']} layers) trained "
        f"from scratch on the same {results['dense']['tokens']:,} tokens of the five domains, in the same order: "
        f"a dense SwiGLU of width {2 * plan['model']['expert_intermediate']}, 8 experts of width "
        f"{plan['model']['expert_intermediate']} with top-2 routing, and 8 experts of width "
        f"{2 * plan['model']['expert_intermediate']} with Switch top-1 routing: the same active feed-forward "
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
    final = {arm: r["val_curve"][-1][1]["mean"] for arm, r in results.items()}
    return [("moe", f"val loss {ARM_LABELS[a]}", f"{v:.3f}") for a, v in final.items()]
