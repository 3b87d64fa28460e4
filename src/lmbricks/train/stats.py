"""Per-step training statistics (:class:`StepStats`) and the ``log.jsonl`` lines made from them.

A step's statistics are summed over its micro-batches and, under DDP, over processes with one
all-reduce: :meth:`StepStats.pack` and :meth:`StepStats.unpack` are the only places that know the
flat layout the collective needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.train.distributed import DistInfo, all_reduce_sum


@dataclass
class StepStats:
    """Detached fp32 statistics of one or more micro-batches, summed.

    Attributes:
        lm_loss: () the LM loss, summed over micro-batches.
        aux: ``{name: ()}`` each auxiliary loss summed over MoE layers (``LossModule.aux_names`` order).
        dropped: (L_moe,) the fraction of routed pairs dropped by capacity, per MoE layer.
        tokens_per_expert: (L_moe, E) routed (token, expert) pairs per MoE layer; (0, 0) for a dense model.
    """

    lm_loss: Tensor
    aux: dict[str, Tensor]
    dropped: Tensor
    tokens_per_expert: Tensor

    def __add__(self, other: StepStats) -> StepStats:
        return StepStats(
            self.lm_loss + other.lm_loss,
            {name: v + other.aux[name] for name, v in self.aux.items()},
            self.dropped + other.dropped,
            self.tokens_per_expert + other.tokens_per_expert,
        )

    @property
    def moe_layers(self) -> int:
        return self.dropped.numel()

    def pack(self) -> Tensor:
        """(1 + A + L_moe + L_moe * E,) the fields in order, for one collective."""
        return torch.cat(
            [
                self.lm_loss.reshape(1),
                *(v.reshape(1) for v in self.aux.values()),
                self.dropped.reshape(-1),
                self.tokens_per_expert.reshape(-1),
            ]
        )

    def unpack(self, flat: Tensor) -> StepStats:
        """The statistics laid out like these ones, read back from ``flat`` (as :meth:`pack` made it)."""
        a, layers = len(self.aux), self.moe_layers
        return StepStats(
            flat[0],
            dict(zip(self.aux, flat[1 : 1 + a], strict=True)),
            flat[1 + a : 1 + a + layers],
            flat[1 + a + layers :].view(self.tokens_per_expert.shape),
        )

    def all_reduce(self, info: DistInfo) -> StepStats:
        """The sum over processes (these statistics when alone)."""
        return self.unpack(all_reduce_sum(self.pack(), info))

    def cpu(self) -> StepStats:
        return self.unpack(self.pack().cpu())


def log_record(
    step: int,
    stats: StepStats,
    n_micro: int,
    lr: float,
    grad_norm: Tensor | None,
    tokens_per_s: float,
    tokens_seen: int,
) -> dict[str, Any]:
    """One ``log.jsonl`` line from the statistics of all micro-batches of all processes.

    Args:
        step: optimizer steps done.
        stats: summed over the step's ``n_micro`` micro-batches (all processes).
        n_micro: micro-batches over all processes.
        lr: the learning rate the step used.
        grad_norm: the global gradient norm before clipping, or None without clipping.
        tokens_per_s: the step's throughput.
        tokens_seen: tokens trained on so far.

    Returns:
        ``{"step", "loss", "lr", ["grad_norm"], ["aux", "dropped_fraction", "expert_load",
        "expert_load_max_over_mean"], "tokens_per_s", "tokens"}`` (MoE keys for MoE models only).
    """
    stats = stats.cpu()
    rec: dict[str, Any] = {"step": step, "loss": stats.lm_loss.item() / n_micro, "lr": lr}
    if grad_norm is not None:
        rec["grad_norm"] = grad_norm.item()
    if stats.moe_layers:
        per = n_micro * stats.moe_layers  # mean over micro-batches and layers
        rec["aux"] = {name: (v / per).item() for name, v in stats.aux.items()}
        rec["dropped_fraction"] = (stats.dropped / n_micro).mean().item()
        tpe = stats.tokens_per_expert  # (L_moe, E) routed pairs
        load = tpe / tpe.sum(-1, keepdim=True).clamp_min(1)
        rec["expert_load"] = [[round(x, 5) for x in row] for row in load.tolist()]  # fraction per expert
        rec["expert_load_max_over_mean"] = [
            round(v, 4) for v in (tpe.max(-1).values / tpe.mean(-1).clamp_min(1e-9)).tolist()
        ]
    rec["tokens_per_s"] = round(tokens_per_s, 1)
    rec["tokens"] = tokens_seen
    return rec


def read_log(path: Path, upto: int | None = None) -> list[dict[str, Any]]:
    """Records of a JSON-lines log, those with step <= ``upto`` if given (a line cut by a kill is dropped)."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if upto is None or rec.get("step", 0) <= upto:
                records.append(rec)
    return records


def truncate_log(path: Path, upto: int) -> list[dict[str, Any]]:
    """Rewrite a JSON-lines log without its records after step ``upto``; returns those kept."""
    records = read_log(path, upto)
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records
