"""Learning-rate schedules as pure functions of the step: warmup-cosine, warmup-stable-decay, constant.

The multiplier returned scales ``optim.lr``; ``torch.optim.lr_scheduler.LambdaLR`` applies it, so the
scheduler's state (its step count) is saved and restored with the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lmbricks.train.config import ScheduleConfig


def lr_multiplier(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """The lr multiplier used for optimizer step ``step`` (0-based) of ``total_steps``.

    - warmup: linear from 1/warmup to 1 over ``warmup_steps`` steps;
    - cosine: half a cosine from 1 down to ``min_lr_ratio`` at the last step;
    - wsd (warmup-stable-decay, arXiv 2404.06395): 1 until the last ``decay_fraction`` of the steps,
      then linear down to ``min_lr_ratio`` at the last step;
    - constant: 1 after warmup.
    """
    w = cfg.warmup_steps
    if step < w:
        return (step + 1) / w
    last = total_steps - 1
    if cfg.kind == "constant" or last <= w:
        return 1.0
    lo = cfg.min_lr_ratio
    if cfg.kind == "cosine":
        p = min(1.0, (step - w) / (last - w))
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p))
    decay_steps = max(1, math.ceil(cfg.decay_fraction * total_steps))
    start = max(w, last - decay_steps)
    if step <= start:
        return 1.0
    p = min(1.0, (step - start) / (last - start))
    return 1.0 - (1 - lo) * p


def schedule_fn(total_steps: int, cfg: ScheduleConfig) -> Callable[[int], float]:
    """``step -> multiplier`` for LambdaLR."""
    return lambda step: lr_multiplier(step, total_steps, cfg)
