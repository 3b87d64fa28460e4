"""Distillation of an acceleration plug-in from its frozen base: KL(base || compressed) per position, weighted."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbricks.nn.model import LM
from lmbricks.plugins.accelerate.forward import (
    check_plugin,
    compressed_upper,
    lower_hidden,
    plain_upper,
    split_point,
)
from lmbricks.plugins.accelerate.layers import AcceleratePlugin


@dataclass
class Distilled:
    """What :func:`distill` returns: the loss of each step and the CPU seconds spent."""

    losses: list[float]
    cpu_seconds: float


def weighted_kl(kl: Tensor, prefix: int, prefix_weight: float) -> Tensor:
    """(B, T) per-position KL -> () weighted mean: the first ``prefix`` positions count ``prefix_weight`` each.

    ``prefix_weight = 1`` is the plain mean over positions; 0 trains on the uncompressed tail only.
    """
    weights = torch.ones(kl.shape[1], dtype=kl.dtype, device=kl.device)  # (T,)
    weights[:prefix] = prefix_weight
    return (kl * weights).sum() / (weights.sum() * kl.shape[0])


def distill_loss(
    model: LM, plugin: AcceleratePlugin, ids: Tensor, keep_last: int, prefix_weight: float = 1.0
) -> Tensor:
    """KL(base logits || compressed logits) per position, fp32, weighted: (B, T) ids -> () loss.

    The lower ``plugin.layer`` layers are run once, without gradient, for both the teacher (the
    plain model) and the plug-in. ``prefix_weight`` weighs the compressed prefix's positions (their
    predictions come through decompression) against the uncompressed tail's (see :func:`weighted_kl`).
    """
    with torch.no_grad():
        lower = lower_hidden(model, plugin.layer, ids)  # (B, T, H)
        teacher = model.lm_head(plain_upper(model, plugin.layer, lower)).float().log_softmax(-1)  # (B, T, V)
    student = model.lm_head(compressed_upper(model, plugin, lower, keep_last)).float().log_softmax(-1)
    kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)  # (B, T)
    return weighted_kl(kl, split_point(ids.shape[1], plugin.ratio, keep_last), prefix_weight)


def distill(
    model: LM,
    plugin: AcceleratePlugin,
    batches: Tensor,
    keep_last: int,
    lr: float = 1e-3,
    prefix_weight: float = 1.0,
    on_step: Callable[[int, float], None] | None = None,
    max_cpu_seconds: float | None = None,
) -> Distilled:
    """Train ``plugin`` on ``batches`` (steps, B, T) with the base frozen (its weights get no gradient).

    Args:
        model: the base LM (left unchanged: ``requires_grad`` is restored afterwards).
        plugin: the plug-in to train (fp32 parameters).
        batches: token ids, one (B, T) batch per step.
        keep_last: uncompressed tokens at the end of each sequence (both kinds of output get trained).
        lr: AdamW learning rate (cosine decay to 10%).
        prefix_weight: weight of a compressed-prefix position's KL against a tail position's.
        on_step: called with (step, loss) after each step.
        max_cpu_seconds: stop early after this much process CPU time.
    """
    check_plugin(model, plugin)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(plugin.parameters(), lr=lr, weight_decay=0.0)
    steps = batches.shape[0]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(s / steps * torch.pi)).item())
    )
    start, losses = time.process_time(), []
    try:
        for step in range(steps):
            loss = distill_loss(model, plugin, batches[step], keep_last, prefix_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1, losses[-1])
            if max_cpu_seconds is not None and time.process_time() - start > max_cpu_seconds:
                break
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return Distilled(losses, time.process_time() - start)
