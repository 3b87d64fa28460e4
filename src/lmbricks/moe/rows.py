"""Moving rows between token order and expert order: the gather and the weighted combine.

``gather_rows`` copies the tokens into expert order with one ``index_select`` (S, H);
``combine_rows`` weights each row by its gate, puts the rows back in flat pair order (T*k, H) and sums
the k outputs of a token over the slot axis in fp32: a fixed order, deterministic on every device
(no atomics, no ``index_add_``). Both are autograd functions with hand-written backwards: the
gather's scatters back to pair order and sums the k copies, the combine's gathers dy once in expert
order (no (T, k, H) temporaries).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from lmbricks.moe.dispatch import DispatchPlan


class _GatherRows(Function):
    """xs = x[tokens]; backward scatters back to pair order and sums the k copies (fixed order)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, tokens: Tensor, order: Tensor, top_k: int) -> Tensor:
        ctx.save_for_backward(order)
        ctx.shape = (x.shape[0], top_k, x.shape[1])
        return x.index_select(0, tokens)  # (S, H)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        (order,) = ctx.saved_tensors
        t, k, _ = ctx.shape
        return sum_by_token(grad, order, t, k), None, None, None


class _Combine(Function):
    """y_t = sum_j w[t, j] * ys[pos(t, j)]: weight in expert order, scatter to pair order, sum the k
    slots in fp32 (fixed order). Backward works in expert order: one gather of dy, no (T, k, H) temps."""

    @staticmethod
    def forward(ctx: Any, ys: Tensor, weights: Tensor, order: Tensor, tokens: Tensor, top_k: int) -> Tensor:
        out, w_sorted = _combine_forward(ys, weights, order, top_k, inplace=False)
        ctx.save_for_backward(ys, w_sorted, order, tokens)
        ctx.weights_meta = (weights.shape, weights.dtype)
        return out

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        ys, w_sorted, order, tokens = ctx.saved_tensors
        shape, dtype = ctx.weights_meta
        g = dy.index_select(0, tokens)  # (S, H): dL/dy of each pair's token
        d_w = None
        if ctx.needs_input_grad[1]:
            acc = w_sorted.dtype
            d_sorted = torch.linalg.vecdot(g.to(acc), ys.to(acc))  # (S,)
            d_w = d_sorted.new_zeros(shape.numel()).index_copy_(0, order, d_sorted).view(shape).to(dtype)
        d_ys = None
        if ctx.needs_input_grad[0]:
            d_ys = g.mul_(w_sorted[:, None].to(g.dtype))
        return d_ys, d_w, None, None, None


def _combine_forward(ys: Tensor, weights: Tensor, order: Tensor, top_k: int, inplace: bool) -> tuple[Tensor, Tensor]:
    """The combine of ``_Combine`` -> (out (T, H), gates in expert order (S,))."""
    acc = torch.promote_types(ys.dtype, torch.float32)  # fp32 accumulation for bf16 / fp16
    w_sorted = weights.reshape(-1).index_select(0, order).to(acc)  # (S,)
    inplace = inplace and ys.dtype == acc
    yw = ys.mul_(w_sorted[:, None]) if inplace else ys.to(acc) * w_sorted[:, None]  # (S, H)
    out = sum_by_token(yw, order, weights.shape[0], top_k)
    return out.to(ys.dtype), w_sorted


def sum_by_token(rows: Tensor, order: Tensor, num_tokens: int, top_k: int) -> Tensor:
    """(S, H) rows in expert order -> (T, H): each token's rows summed over its k slots, fixed order.

    The rows are scattered to (T*k, H) pair order and the k slots summed: no atomics, deterministic
    on every device. (CPU ``index_add_`` / ``scatter_add_`` were measured: faster with one thread,
    but 5-25x slower in wall time with two on a loaded machine.)
    """
    t, h = num_tokens, rows.shape[1]
    buf = pair_buffer(t * top_k, h, rows.shape[0], rows)
    buf.index_copy_(0, order, rows)  # (T*k, H), zero rows for pairs that were not routed
    return buf.view(t, top_k, h).sum(1) if top_k > 1 else buf


def pair_buffer(num_pairs: int, width: int, num_routed: int, like: Tensor) -> Tensor:
    """A (T*k, width) buffer in pair order like ``like``: zeroed unless every pair is routed."""
    if num_routed == num_pairs:  # every row is written
        return like.new_empty(num_pairs, width)
    return like.new_zeros(num_pairs, width)


def gather_rows(x: Tensor, plan: DispatchPlan) -> Tensor:
    """(T, H) tokens -> (S, H) rows in expert order (differentiable)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GatherRows.apply(x, plan.tokens, plan.order, plan.top_k)
    return x.index_select(0, plan.tokens)


def combine_rows(ys: Tensor, weights: Tensor, plan: DispatchPlan, overwrite: bool = False) -> Tensor:
    """(S, H) expert outputs -> (T, H): y_t = sum_j w[t, j] * out(t, j), summed in fp32.

    Args:
        ys: (S, H) outputs in expert order.
        weights: (T, k) gates; pairs that were not routed contribute zero whatever their gate.
        plan: the DispatchPlan ys was computed with.
        overwrite: without autograd, ys may be scaled in place (saves a copy).

    Returns:
        (T, H) in the dtype of ys.
    """
    if torch.is_grad_enabled() and (ys.requires_grad or weights.requires_grad):
        return _Combine.apply(ys, weights, plan.order, plan.tokens, plan.top_k)
    return _combine_forward(ys, weights, plan.order, plan.top_k, inplace=overwrite)[0]
