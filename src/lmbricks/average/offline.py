"""Offline checkpoint averaging (uniform, weighted, EMA-ordered, LAWA), streamed like merges.

Run-directory layout (written by ``lmbricks train``)::

    RUN_DIR/checkpoints/step-000100/   # each a Hugging Face model directory
    RUN_DIR/checkpoints/step-000200/
    ...

LAWA (arXiv 2209.14981) averages the last ``k`` of them uniformly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lmbricks.errors import ConfigError
from lmbricks.merge.executor import DEFAULT_MAX_MEMORY, ProgressFn, execute
from lmbricks.merge.plan import plan_merge
from lmbricks.merge.recipe import parse_recipe

_STEP = re.compile(r"^step-(\d+)$")


def ema_weights(n: int, decay: float) -> list[float]:
    """Weights of checkpoints ``c1..cn`` (oldest first) in the EMA
    ``e_k = decay·e_{k-1} + (1-decay)·c_k``, ``e_1 = c_1``.

    Returns:
        ``[decay^(n-1), (1-decay)·decay^(n-2), ..., (1-decay)]``; they sum to 1.
    """
    if not 0 <= decay < 1:
        raise ConfigError(f"--ema decay must lie in [0, 1), got {decay}")
    if n == 1:
        return [1.0]
    return [decay ** (n - 1)] + [(1 - decay) * decay ** (n - k) for k in range(2, n + 1)]


def last_k_checkpoints(run_dir: str | Path, k: int) -> list[Path]:
    """The last ``k`` checkpoints (by step number) of ``RUN_DIR/checkpoints/step-NNNNNN``.

    Raises:
        ConfigError: no such layout, or fewer than ``k`` checkpoints.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        raise ConfigError(f"{run_dir}: no checkpoints/ directory (expected RUN_DIR/checkpoints/step-NNNNNN/)")
    found = sorted(
        ((int(m[1]), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.match(p.name))),
        key=lambda sp: sp[0],
    )
    if k < 1 or len(found) < k:
        raise ConfigError(f"{root}: --last-k {k} but {len(found)} step-NNNNNN checkpoints found")
    return [p for _s, p in found[-k:]]


def average_checkpoints(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    *,
    weights: Sequence[float] | None = None,
    ema: float | None = None,
    force: bool = False,
    max_memory: str | int = DEFAULT_MAX_MEMORY,
    out_dtype: str | None = None,
    on_tensor: ProgressFn | None = None,
    allow_pickle: bool | None = None,
) -> Path:
    """Average checkpoints of one model into ``out``, tensor by tensor (fp32 accumulation).

    Args:
        checkpoints: model directories, oldest first (the order matters for ``ema``).
        out: output directory.
        weights: one weight per checkpoint (normalised); default uniform.
        ema: EMA decay applied over the checkpoints in order (exclusive with ``weights``).
        force: replace an existing output.
        max_memory: streaming budget.
        out_dtype: stored dtype (default: the inputs').
        on_tensor: progress callback.
        allow_pickle: read ``.bin`` pickle checkpoints (weights only); None follows
            :func:`lmbricks.checkpoint.allow_pickles` (default: refuse).

    Returns:
        The output directory.

    Raises:
        ConfigError: fewer than one checkpoint, wrong number of weights, both weights and ema.
    """
    paths = [str(Path(c)) for c in checkpoints]
    if not paths:
        raise ConfigError("average: no checkpoints given")
    if len(set(paths)) != len(paths):
        raise ConfigError("average: a checkpoint is listed twice")
    if weights is not None and ema is not None:
        raise ConfigError("average: give --weights or --ema, not both")
    if ema is not None:
        w = ema_weights(len(paths), ema)
    elif weights is not None:
        if len(weights) != len(paths):
            raise ConfigError(f"average: {len(weights)} weights for {len(paths)} checkpoints")
        w = [float(x) for x in weights]
        if sum(w) == 0:
            raise ConfigError(f"average: the weights {w} sum to zero, so they cannot be normalised")
    else:
        w = [1.0] * len(paths)
    recipe: dict = {
        "merge_method": "linear",
        "models": [{"model": p, "parameters": {"weight": x}} for p, x in zip(paths, w, strict=False)],
    }
    if out_dtype:
        recipe["out_dtype"] = out_dtype
    plan = plan_merge(parse_recipe(recipe, "average"), out, force=force, allow_pickle=allow_pickle)
    return execute(plan, out, force=force, max_memory=max_memory, on_tensor=on_tensor, command="lmbricks average")
