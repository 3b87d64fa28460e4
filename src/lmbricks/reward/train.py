"""Training reward models with the Bradley-Terry loss, lower layers frozen and their features cached.

The backbone is split at ``start = num_layers - trainable_layers``: the embedding and the layers
below ``start`` are frozen, so their outputs for every sequence are computed once
(:func:`precompute`) and reused by every epoch and every member of a WARM ensemble; only the last
``trainable_layers`` layers, the final norm and the head are trained. ``trainable_layers = 0``
trains the head alone (a linear probe); ``trainable_layers = num_layers`` everything but the
embedding. On a 135M model on CPU the last-layers variant is what fits: say so when quoting results.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from lmbricks.reward.loss import bradley_terry_loss, pair_accuracy
from lmbricks.reward.model import RewardModel, pad_right
from lmbricks.reward.pairs import Pair
from lmbricks.runtime import autocast, resolve_precision


class RewardTrainConfig(BaseModel):
    """Hyper-parameters of one reward model."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-4, gt=0)
    epochs: int = Field(2, gt=0)
    batch_size: int = Field(8, gt=0, description="pairs per step")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, description="data order (and head init when head_seed is None)")
    head_seed: int | None = Field(0, description="head initialisation; shared across WARM members")
    head_init_std: float = Field(0.02, ge=0)
    trainable_layers: int = Field(2, ge=0, description="last layers trained (0: head only)")
    max_len: int = Field(256, gt=4, description="longer pairs are skipped (and counted)")
    format: Literal["plain", "chat"] = Field("plain", description="plain: 'User: ...\\nAssistant: ...'")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast over fp32 weights where the CPU/GPU has native bf16, else fp32"
    )


@dataclass
class EncodedPairs:
    """Token ids of each pair's chosen and rejected texts; ``skipped`` counts pairs over max_len."""

    chosen: list[Tensor]
    rejected: list[Tensor]
    skipped: int


def render_pair_text(tokenizer: Any, prompt: str, response: str, fmt: str) -> str:
    """The text scored for one response: plain ``User: ...\\nAssistant: ...`` or the chat template."""
    if fmt == "chat":
        from lmbricks.sft.template import render_chat

        return render_chat(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])
    return f"User: {prompt}\nAssistant: {response}"


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], max_len: int, fmt: str = "plain") -> EncodedPairs:
    """Tokenise both sides of each pair; pairs with a side longer than ``max_len`` are skipped."""
    chosen, rejected, skipped = [], [], 0
    for p in pairs:
        c = tokenizer(render_pair_text(tokenizer, p.prompt, p.chosen, fmt), add_special_tokens=False)["input_ids"]
        r = tokenizer(render_pair_text(tokenizer, p.prompt, p.rejected, fmt), add_special_tokens=False)["input_ids"]
        if max(len(c), len(r)) > max_len:
            skipped += 1
            continue
        chosen.append(torch.tensor(c, dtype=torch.long))
        rejected.append(torch.tensor(r, dtype=torch.long))
    return EncodedPairs(chosen, rejected, skipped)


@torch.no_grad()
def precompute(
    rm: RewardModel, seqs: Sequence[Tensor], start: int, batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[Tensor]:  # fmt: skip
    """Hidden states entering layer ``start`` of each sequence: a list of (T_i, H) tensors."""
    out: list[Tensor] = []
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths share a batch
    feats: dict[int, Tensor] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids, lengths = pad_right([seqs[i] for i in idx])
        x = rm.trunk(ids, start)
        for j, i in enumerate(idx):
            feats[i] = x[j, : int(lengths[j])].clone()
        if on_batch is not None:
            on_batch(len(idx))
    out = [feats[i] for i in range(len(seqs))]
    return out


def score_features(rm: RewardModel, feats: Sequence[Tensor], start: int, batch_size: int = 16) -> Tensor:
    """Scores (N,) of cached features entering layer ``start``."""
    scores = []
    with torch.no_grad():
        for b in range(0, len(feats), batch_size):
            x, lengths = pad_right(list(feats[b : b + batch_size]))
            scores.append(rm.top(x, lengths, start))
    return torch.cat(scores) if scores else torch.zeros(0)


def init_head(rm: RewardModel, cfg: RewardTrainConfig) -> None:
    """Normal(0, head_init_std) head from ``head_seed`` (or ``seed``)."""
    gen = torch.Generator().manual_seed(cfg.head_seed if cfg.head_seed is not None else cfg.seed)
    with torch.no_grad():
        rm.head.weight.copy_(torch.randn(rm.head.weight.shape, generator=gen) * cfg.head_init_std)


def train_on_features(
    rm: RewardModel,
    chosen: Sequence[Tensor],
    rejected: Sequence[Tensor],
    cfg: RewardTrainConfig,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Bradley-Terry training of the layers from ``num_layers - cfg.trainable_layers`` on cached features.

    Args:
        rm: the reward model (its head is re-initialised from ``cfg``; trained in place).
        chosen, rejected: features entering the first trained layer, per pair.
        cfg: hyper-parameters (``seed`` fixes the data order).
        on_step: called with each step's record.

    Returns:
        Per-step records ``{"step", "epoch", "loss", "accuracy"}``.
    """
    start = rm.num_layers - cfg.trainable_layers
    params = rm.trainable_from(start)
    init_head(rm, cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    precision = resolve_precision(cfg.precision, params[0].device)  # fp32 weights and AdamW state either way
    rng = random.Random(cfg.seed)
    history: list[dict[str, float]] = []
    rm.train()
    step = 0
    for epoch in range(cfg.epochs):
        order = list(range(len(chosen)))
        rng.shuffle(order)
        for b in range(0, len(order), cfg.batch_size):
            idx = order[b : b + cfg.batch_size]
            x, lengths = pad_right([chosen[i] for i in idx] + [rejected[i] for i in idx])
            with autocast(precision, x.device):
                scores = rm.top(x, lengths, start)  # (2b,) fp32: the head's output is cast up
            rc, rr = scores[: len(idx)], scores[len(idx) :]
            loss = bradley_terry_loss(rc, rr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            rec = {
                "step": step,
                "epoch": epoch,
                "loss": float(loss.detach()),
                "accuracy": pair_accuracy(rc.detach(), rr.detach()),
            }
            history.append(rec)
            if on_step is not None:
                on_step(rec)
    rm.eval()
    return history
