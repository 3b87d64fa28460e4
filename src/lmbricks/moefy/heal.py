"""Healing: a short distillation of a MoEfied model towards the dense model it came from.

Loss: KL(dense || MoEfied) of the next-token distributions on corpus blocks (train split). The
routers are always trainable (through the straight-through gate of
:meth:`~lmbricks.moefy.runtime.MoefiedFFN._train_forward`); the experts' weights optionally. All
other parameters stay frozen. The budget is in tokens and/or minutes, whichever ends first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmbricks.errors import ConfigError
from lmbricks.moefy.convert import moefied_layers
from lmbricks.moefy.runtime import MoefiedFFN
from lmbricks.runtime import Precision, autocast


@dataclass
class HealConfig:
    """Healing budget and optimiser.

    Attributes:
        max_tokens: stop after this many training tokens (None: no token limit).
        max_minutes: stop after this many minutes (None: no time limit).
        train_experts: also train the experts' weights (else routers only).
        lr: learning rate of the experts' weights.
        router_lr: learning rate of the routers.
        batch_size: blocks per step.
        precision: ``"bf16"``: the teacher's and student's forwards run under bf16 autocast (the
            trained weights and AdamW's state stay fp32); ``"fp32"``: no autocast. Callers pass
            what :func:`lmbricks.runtime.resolve_precision` made of ``auto``.
    """

    max_tokens: int | None = None
    max_minutes: float | None = 30.0
    train_experts: bool = True
    lr: float = 2e-5
    router_lr: float = 1e-3
    batch_size: int = 2
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.max_tokens is None and self.max_minutes is None:
            raise ConfigError("healing needs a budget: max_tokens and/or max_minutes")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class HealStats:
    """What healing did: steps, tokens, seconds, the KL per step and the precision it ran in."""

    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    kl: list[float] = field(default_factory=list)
    precision: Precision = "fp32"


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student), both (B, T, V)."""
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    s = F.log_softmax(student_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def _budget_left(config: HealConfig, stats: HealStats, elapsed: float) -> bool:
    """Whether neither the minutes nor the tokens of the budget are spent."""
    if config.max_minutes is not None and elapsed >= 60 * config.max_minutes:
        return False
    return config.max_tokens is None or stats.tokens < config.max_tokens


def _optimiser(
    student: nn.Module, layers: list[MoefiedFFN], config: HealConfig
) -> tuple[list[nn.Parameter], torch.optim.Optimizer]:
    """Freeze ``student`` but the routers (and the experts if ``config.train_experts``): (those, AdamW)."""
    for p in student.parameters():
        p.requires_grad_(False)
    router_params = [p for m in layers if m.router is not None for p in m.router.parameters()]
    expert_params = [p for m in layers for p in (m.w_gate, m.w_up, m.w_down)] if config.train_experts else []
    for p in router_params + expert_params:
        p.requires_grad_(True)
    groups = [{"params": router_params, "lr": config.router_lr}]
    if expert_params:
        groups.append({"params": expert_params, "lr": config.lr})
    return router_params + expert_params, torch.optim.AdamW(groups, weight_decay=0.0)


def heal(
    student: nn.Module,
    teacher: nn.Module,
    blocks: torch.Tensor,
    config: HealConfig,
    on_step: Callable[[HealStats], None] | None = None,
) -> HealStats:
    """Distil ``student`` (MoEfied, current routing) towards ``teacher`` (dense) in place.

    Args:
        student: the MoEfied model.
        teacher: the dense model (frozen, eval mode).
        blocks: (N, T) training token blocks, cycled in order.
        config: budget and optimiser.
        on_step: called after every step with the running statistics (progress bar).

    Returns:
        :class:`HealStats`; the student is left in eval mode with all parameters frozen.
    """
    layers = moefied_layers(student)
    if not layers:
        raise ConfigError("heal: the student has no MoEfied FFN")
    if any(m.mode != "router" or m.router is None for m in layers):
        raise ConfigError("heal: every MoEfied FFN must route with a router (mode 'router')")
    params, opt = _optimiser(student, layers, config)
    stats = HealStats(precision=config.precision)
    start = time.perf_counter()
    teacher.eval()
    student.train()
    try:
        i = 0
        while _budget_left(config, stats, time.perf_counter() - start):
            ids = blocks[i : i + config.batch_size]
            i = (i + config.batch_size) % max(blocks.shape[0], 1)
            with torch.no_grad(), autocast(config.precision, ids.device):
                target = teacher(input_ids=ids).logits
            with autocast(config.precision, ids.device):
                logits = student(input_ids=ids).logits
            loss = kl_to_teacher(logits, target)  # in fp32 whatever the logits' dtype
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            stats.steps += 1
            stats.tokens += ids.numel()
            value = float(loss.detach())
            stats.kl.append(value if math.isfinite(value) else float("nan"))
            stats.seconds = time.perf_counter() - start
            if on_step is not None:
                on_step(stats)
    finally:
        student.eval()
        for p in student.parameters():
            p.requires_grad_(False)
        for m in layers:
            m.down_norms = m.w_down.detach().float().norm(dim=-1).reshape(-1)
    return stats
