"""Typed settings of ``lmbricks plugins accelerate train``."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from lmbricks.config import settings


@settings
class AccelerateTrainJob:
    """One acceleration plug-in to train by distillation from its frozen base.

    Attributes:
        model: registry name or model directory (loads as lmbricks' LM).
        ratio: tokens merged into one vector (r).
        out: the brick directory to write.
        layer: base layers run on the full sequence before compressing; None: a fifth of them.
        bottleneck: inner width of the compression and decompression MLPs.
        domains: corpus domains whose train split is the distillation text.
        texts: UTF-8 text files to distil on instead of the domains.
        seq_len: tokens per training sequence.
        keep_last: uncompressed tokens at the end of each training sequence.
        batch_size: sequences per step.
        steps: optimisation steps.
        lr: AdamW learning rate.
        prefix_weight: weight of a compressed-prefix position's KL against an uncompressed tail
            position's (1: every position alike; 0: the tail only; 0.1: the measured recipe).
        max_cpu_seconds: stop earlier after this much process CPU time.
        force: replace an existing brick that lmbricks wrote.
    """

    model: str
    ratio: Annotated[int, Field(ge=1, le=64)]
    out: Path
    layer: Annotated[int, Field(ge=1)] | None = None
    bottleneck: Annotated[int, Field(ge=1)] = 256
    domains: tuple[str, ...] = field(default=("en_prose", "code", "math", "dialogue", "zh"))
    texts: tuple[Path, ...] = ()
    seq_len: Annotated[int, Field(ge=2)] = 256
    keep_last: Annotated[int, Field(ge=0)] = 64
    batch_size: Annotated[int, Field(ge=1)] = 4
    steps: Annotated[int, Field(ge=1)] = 200
    lr: Annotated[float, Field(gt=0)] = 1e-3
    prefix_weight: Annotated[float, Field(ge=0, le=1)] = 0.1
    max_cpu_seconds: Annotated[float, Field(gt=0)] | None = None
    force: bool = False
