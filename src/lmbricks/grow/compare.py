"""Compare an MoE grown from bricks with its base and its bricks: bits per byte per domain, and its routing.

The base and the bricks are scored on exactly the text the MoE is scored on (the same tokens and
bytes), so their perplexities convert to bits per byte with the MoE's token and byte counts. The
tour's grow section is :func:`compare_moe` plus its plots and sentences.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmbricks.grow.routing import DomainEval, evaluate_routed


def bits_per_byte(ppl: float, tokens: int, n_bytes: int) -> float:
    """Bits per byte of a model scored on the same text (same tokens and bytes) with perplexity ``ppl``."""
    return math.log2(ppl) * tokens / max(n_bytes, 1)


@dataclass
class MoEComparison:
    """Held-out bits per byte of the MoE, its base and (where known) each brick alone, and the MoE's routing.

    Attributes:
        experts: the experts' names (their bricks' domains), in expert order.
        domains: the evaluated domains.
        top_k: experts per token; n_layers: MoE layers.
        bpb: ``{"base" | "own brick" | "MoE top-k": {domain: bits per byte}}`` ("own brick" only
            where a brick's own-domain perplexity was given).
        shares: per domain, the share of routed tokens per expert (mean over MoE layers).
        base_measured: the base was scored here (not given).
        seconds: ``evaluate_moe`` (load and score the MoE), ``evaluate`` (everything).
    """

    experts: list[str]
    domains: list[str]
    top_k: int
    n_layers: int
    bpb: dict[str, dict[str, float]]
    shares: dict[str, list[float]]
    base_measured: bool
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def moe_row(self) -> str:
        """The key of the MoE's row in :attr:`bpb`."""
        return f"MoE top-{self.top_k}"

    def own_share(self) -> dict[str, float]:
        """Per brick domain, the share of its tokens routed to that domain's expert."""
        return {d: self.shares[d][self.experts.index(d)] for d in self.domains if d in self.experts}

    def top_expert(self, domain: str) -> str:
        """The expert that receives most of ``domain``'s tokens."""
        row = self.shares[domain]
        return self.experts[max(range(len(row)), key=lambda e: (row[e], -e))]

    def gains(self) -> dict[str, float]:
        """Per domain, ``1 - bpb(MoE) / bpb(base)`` (positive: the MoE is better)."""
        return {d: 1 - self.bpb[self.moe_row][d] / self.bpb["base"][d] for d in self.domains}

    def recovered(self) -> dict[str, float]:
        """Per brick domain, the share of the brick's own gain over the base that the MoE keeps."""
        base, moe, own = self.bpb["base"], self.bpb[self.moe_row], self.bpb.get("own brick", {})
        return {d: (base[d] - moe[d]) / (base[d] - own[d]) for d in own if base[d] - own[d] > 1e-6}


def _rows(
    moe_eval: Mapping[str, DomainEval],
    domains: Sequence[str],
    base_ppl: Mapping[str, float],
    brick_ppl: Mapping[str, float],
    moe_row: str,
) -> dict[str, dict[str, float]]:
    """Bits per byte of the base, the bricks alone and the MoE, all counted on the MoE's tokens and bytes."""
    rows: dict[str, dict[str, float]] = {"base": {}, "own brick": {}, moe_row: {}}
    for d in domains:
        r = moe_eval[d].result
        rows["base"][d] = bits_per_byte(base_ppl[d], r.tokens, r.bytes)
        rows[moe_row][d] = r.bpb
        if d in brick_ppl:
            rows["own brick"][d] = bits_per_byte(brick_ppl[d], r.tokens, r.bytes)
    if not rows["own brick"]:
        del rows["own brick"]
    return rows


def compare_moe(
    moe_path: Path,
    experts: Sequence[str],
    domains: Sequence[str],
    eval_bytes: int,
    *,
    base: Callable[[], Any],
    base_ppl: Mapping[str, float] | None = None,
    brick_ppl: Mapping[str, float] | None = None,
) -> MoEComparison:
    """Score the MoE at ``moe_path`` on each domain's held-out text, and its base unless ``base_ppl`` is given.

    Args:
        moe_path: the MoE directory (its tokenizer scores the base too: they share it).
        experts: the experts' names, in expert order (an expert named like a domain is that domain's).
        domains: domains to evaluate (test split, first ``eval_bytes`` bytes each).
        eval_bytes: held-out bytes per domain.
        base: returns the base model (called only when ``base_ppl`` is None).
        base_ppl: the base's perplexity per domain, if already measured on the same text.
        brick_ppl: each brick's perplexity on its own domain, if measured on the same text.

    Returns:
        The :class:`MoEComparison`.
    """
    from lmbricks.nn.load import load_model

    t0 = time.perf_counter()
    moe, tokenizer = load_model(moe_path)
    k, n_layers = moe.cfg.moe_config().top_k, moe.cfg.num_moe_layers
    moe_eval = evaluate_routed(moe, tokenizer, domains, eval_bytes)
    del moe
    moe_s = time.perf_counter() - t0
    base_measured = base_ppl is None
    if base_ppl is None:
        base_eval = evaluate_routed(base(), tokenizer, domains, eval_bytes)
        base_ppl = {d: r.result.ppl for d, r in base_eval.items()}
    bpb = _rows(moe_eval, domains, base_ppl, brick_ppl or {}, f"MoE top-{k}")
    shares = {d: moe_eval[d].shares_list() for d in domains}
    seconds = {"evaluate_moe": moe_s, "evaluate": time.perf_counter() - t0}
    return MoEComparison(list(experts), list(domains), k, n_layers, bpb, shares, base_measured, seconds)
