"""SCE (select, calculate, erase; FuseChat-2.0, arXiv 2408.07990).

With task vectors ``δi = θi - θ0``:

* **select**: keep the ``select_topk`` fraction of entries (of those where the models differ at all)
  with the largest variance across the models, ``var_j = mean_i (δij - mean_i δij)²``, in every δi;
* **calculate**: each model's weight ``wi = mean(δi²) / Σk mean(δk²)`` over the selected entries
  (uniform if every selected entry is zero);
* **erase**: per entry, drop the task vectors whose sign differs from ``sign(Σi δij)`` (0 counts as +);
* ``θ = θ0 + Σi wi mi δi / max(Σi wi mi, 1e-6)``.

The variance window and the weights are whole-tensor statistics (one pass each over row blocks);
the rest is computed block by block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmbricks.merge.methods.streaming import flat_statistic, on_whole_tensor
from lmbricks.merge.registry import ChunkedForm, Param, bind, register_method
from lmbricks.merge.sparsify import RankWindow, rank_window
from lmbricks.merge.task_vectors import row_blocks

_NAME = "sce"
_PARAMS = (
    Param("select_topk", float, default=1.0, help="fraction of entries kept, by variance across the models",
          bounds="[0, 1]"),
    Param("int8_mask", bool, default=False, help="mergekit memory option; accepted, no effect here"),
)  # fmt: skip
_KEEP_NONE = RankWindow(float("inf"), 0, float("inf"), 0)


@dataclass(frozen=True)
class SceState:
    """The selection window over the variances (None: keep all) and the models' weights."""

    window: RankWindow | None
    weights: tuple[float, ...]


def _deltas(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(k, *block)`` fp32 task vectors of one block (each input converted straight into its row)."""
    b = base.float()
    out = torch.empty((len(tensors), *base.shape), dtype=torch.float32)
    for row, t in zip(out, tensors, strict=True):
        row.copy_(t).sub_(b)
    return out


def _variance(deltas: torch.Tensor) -> torch.Tensor:
    """``mean_i (δi - mean_i δi)²`` over the models (dim 0) of ``(k, *block)`` fp32 task vectors.

    Two elementwise passes: ``Tensor.var(dim=0)`` reduces across the leading dimension one entry
    at a time and took 80% of sce's CPU time; this is about ten times faster.
    """
    dev = deltas - deltas.mean(dim=0)
    return dev.square_().sum(dim=0).div_(deltas.shape[0])


def _selected(deltas: torch.Tensor, window: RankWindow | None, offset: int) -> torch.Tensor:
    """``deltas`` with the unselected entries zeroed, in place (``deltas`` unchanged when all are kept)."""
    if window is None:
        return deltas
    return deltas.mul_(window.mask(_variance(deltas), offset))


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1) if t.dim() <= 1 else t


def sce_prepare(base: torch.Tensor, tensors: Sequence[torch.Tensor], **given: Any) -> SceState:
    """The selection window (top ``select_topk`` variances, ties broken by flat index as every
    lmbricks rank cut) and the weights, in two passes over row blocks.

    Raises:
        MergeError: an argument sce does not take.
    """
    kw = bind(_NAME, _PARAMS, given, len(tensors))
    k = len(tensors)
    topk = float(kw["select_topk"])
    if k == 1:  # one model: the variance is 0 everywhere, so a selection keeps nothing
        return SceState(None if topk >= 1 else _KEEP_NONE, (1.0,))
    b, xs = _flat(base), [_flat(t) for t in tensors]
    window = None
    if topk < 1:
        var = flat_statistic(b.shape, lambda r0, r1: _variance(_deltas(b[r0:r1], [x[r0:r1] for x in xs])))
        n = var.numel()
        keep = int(int(torch.count_nonzero(var)) * topk)
        window = _KEEP_NONE if keep == 0 else rank_window(var, n - keep, n)
        del var
    squares = torch.zeros(k, dtype=torch.float64)
    per_row = max(1, b[0].numel()) if b.dim() > 1 else 1
    for r0, r1 in row_blocks(b.shape):
        d = _selected(_deltas(b[r0:r1], [x[r0:r1] for x in xs]), window, r0 * per_row)
        squares += d.square_().reshape(k, -1).sum(1, dtype=torch.float64)
    total = float(squares.sum())
    weights = [1.0 / k] * k if total == 0 else [float(s) / total for s in squares]
    return SceState(window, tuple(weights))


def sce_apply(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], *, state: SceState, offset: int, **given: Any
) -> torch.Tensor:
    """Select, erase and merge one row block at flat ``offset`` given the window and weights.

    Raises:
        MergeError: an argument sce does not take.
    """
    bind(_NAME, _PARAMS, given, len(tensors))
    d = _selected(_deltas(base, tensors), state.window, offset)  # (k, *block)
    sign = torch.where(d.sum(0) >= 0, 1.0, -1.0)
    w = torch.tensor(state.weights, dtype=torch.float32).reshape(-1, *([1] * base.dim()))
    kept = w * (d.sign() == sign)  # wi where δi agrees with the elected sign, else 0
    merged = (d * kept).sum(0) / kept.sum(0).clamp(min=1e-6)
    return base.float() + merged


def sce(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], *, select_topk: float = 1.0, int8_mask: bool = False
) -> torch.Tensor:
    """SCE merge of the task vectors (see the module docstring).

    Args:
        base: θ0, shape ``S``.
        tensors: θi, shape ``S``, any float dtype.
        select_topk: fraction of the entries with nonzero variance kept (1: all).
        int8_mask: accepted for mergekit recipes; no effect.

    Returns:
        fp32 tensor of shape ``S``.
    """
    return on_whole_tensor(sce_prepare, sce_apply, base, tensors, select_topk=select_topk, int8_mask=int8_mask)


register_method(
    name=_NAME,
    reference="https://arxiv.org/abs/2408.07990",
    formula="δi = θi-θ0; keep top-k var_i(δ) entries; wi = mean(δi²)/Σ mean(δk²); mi = [sign δi = sign Σδ]; "
    "θ = θ0 + Σ wi mi δi / Σ wi mi",
    params=_PARAMS,
    chunked=ChunkedForm(sce_prepare, sce_apply),
)(sce)
