"""The dense-vs-MoE comparison as a pipeline: a :class:`CompareConfig` in, a :class:`CompareResult` out.

:func:`compare_arms` trains the three arms of :mod:`lmbricks.train.arms` on the same blocks and
scores them; :func:`summary_table`, :func:`val_curve_series`, :func:`load_heatmap_rows` and
:func:`interpretation` turn the result into tables, plot series and sentences (the tour's ``moe``
section and ``scripts/moe_experiment.py`` print and plot them; docs/moe.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from lmbricks.config import validate
from lmbricks.train.arms import ARM_LABELS, DOMAINS, arm_models, arm_train_config, run_arm, text_blocks
from lmbricks.train.config import parse_config

# Differences in final validation loss below this are reported as no difference (single seed, tiny budgets).
NOISE_NATS = 0.02


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArmShape(_Strict):
    """The trunk shared by the three arms and the top-2 expert width I (dense and Switch width 2I)."""

    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    expert_intermediate: int = Field(gt=0, description="I, the width of a top-2 expert")


class CompareConfig(_Strict):
    """The budget of one comparison: the same for the three arms."""

    model: ArmShape
    steps: int = Field(gt=0, description="optimizer steps per arm")
    eval_every: int = Field(gt=0, description="a checkpoint (a validation point) every this many steps")
    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=1)
    lr: float = Field(gt=0)
    train_bytes: int = Field(ge=0, description="training text taken per domain (unless blocks are given)")
    val_bytes: int = Field(6_000, ge=0, description="validation text read per domain")
    val_blocks: int = Field(gt=0, description="validation blocks kept per domain")
    seed: int = 0


def tour_config(quick: bool) -> CompareConfig:
    """The tour's budget: 32 steps of 8 x 64 tokens per arm in full mode, 12 steps of 4 x 64 in quick mode.

    1-thread CPU time measured: ~0.7 s per 512-token step of one arm, most of it the 49152-word
    output head.
    """
    return parse_compare_config(
        {
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
    )


def parse_compare_config(data: Any, source: str = "moe comparison") -> CompareConfig:
    """Validate a mapping into a :class:`CompareConfig` (ConfigError naming the key otherwise)."""
    return validate(CompareConfig, data, source, what="comparison budget")


@dataclass
class CompareResult:
    """The three arms' results, keyed by arm (``dense``, ``top2``, ``switch``).

    Each arm's entry is what :func:`lmbricks.train.arms.run_arm` returns: parameter counts, training
    time and tokens, the training and validation curves and, for MoE arms, the per-domain expert load.
    """

    config: CompareConfig
    arms: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """``{"plan": config, "arms": arms}``, JSON-able (the tour caches and reports this)."""
        return {"plan": self.config.model_dump(mode="json"), "arms": self.arms}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompareResult:
        return cls(parse_compare_config(data["plan"]), data["arms"])


def compare_arms(
    cfg: CompareConfig,
    tokenizer: Any,
    tokenizer_ref: str,
    work_dir: Path,
    domains: Sequence[str] = DOMAINS,
    log: Callable[[str], None] = print,
    train_chunks: Tensor | None = None,
    val_blocks: dict[str, Tensor] | None = None,
) -> CompareResult:
    """Train the three arms at the budget of ``cfg`` on the same blocks and score them.

    Args:
        cfg: the budget.
        tokenizer: the tokenizer whose ids the blocks hold.
        tokenizer_ref: its reference, written into the training configs.
        work_dir: where the (deleted afterwards) run directories go.
        domains: training and validation domains.
        log: progress lines.
        train_chunks: (N, seq_len) training blocks (default: the first ``train_bytes`` of each domain).
        val_blocks: held-out ``{domain: (N, seq_len)}`` blocks (default: the first ``val_blocks``
            blocks of each domain's validation split).

    Returns:
        The :class:`CompareResult`.
    """
    if train_chunks is None:
        parts = text_blocks(tokenizer, domains, "train", cfg.seq_len, cfg.train_bytes)
        train_chunks = torch.cat(list(parts.values()))
    if val_blocks is None:  # the first blocks of each domain's validation split
        held_out = text_blocks(tokenizer, domains, "validation", cfg.seq_len, cfg.val_bytes)
        val_blocks = {d: b[: cfg.val_blocks] for d, b in held_out.items()}
    shape = cfg.model
    models = arm_models(
        shape.hidden_size, shape.num_layers, shape.num_heads, shape.expert_intermediate, num_kv_heads=shape.num_kv_heads
    )
    arms = {}
    for arm, model in models.items():
        budget = (cfg.steps, cfg.batch_size, cfg.seq_len, cfg.lr, cfg.eval_every)
        mapping = arm_train_config(model, tokenizer_ref, *budget, domains=domains, seed=cfg.seed)
        train_cfg = parse_config(mapping, f"moe tour arm {arm}")
        log(f"moe: training {arm} ({cfg.steps} steps)")
        arms[arm] = run_arm(
            train_cfg, work_dir / arm, val_blocks, chunks=train_chunks, tokenizer=tokenizer, keep_run=False
        )
    return CompareResult(cfg, arms)


def final_losses(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{arm: final mean validation loss}``."""
    return {arm: r["val_curve"][-1][1]["mean"] for arm, r in results.items()}


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
    final = final_losses(results)
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
