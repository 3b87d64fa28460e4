"""Distillation of an acceleration plug-in from its frozen base: KL(base || compressed) on the logits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbricks.nn.model import LM
from lmbricks.plugins.accelerate.forward import check_plugin, compressed_logits
from lmbricks.plugins.accelerate.layers import AcceleratePlugin


@dataclass
class Distilled:
    """What :func:`distill` returns: the loss of each step and the CPU seconds spent."""

    losses: list[float]
    cpu_seconds: float


def distill_loss(model: LM, plugin: AcceleratePlugin, ids: Tensor, keep_last: int) -> Tensor:
    """Mean over positions of KL(base logits || compressed logits), fp32: (B, T) ids -> () loss."""
    with torch.no_grad():
        teacher = compressed_logits(model, None, ids).float().log_softmax(-1)  # (B, T, V)
    student = compressed_logits(model, plugin, ids, keep_last).float().log_softmax(-1)  # (B, T, V)
    return F.kl_div(student.flatten(0, 1), teacher.flatten(0, 1), log_target=True, reduction="batchmean")


def distill(
    model: LM,
    plugin: AcceleratePlugin,
    batches: Tensor,
    keep_last: int,
    lr: float = 1e-3,
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
            loss = distill_loss(model, plugin, batches[step], keep_last)
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
