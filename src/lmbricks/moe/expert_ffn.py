"""Execution paths of the experts' FFNs over rows sorted by expert: the loop and the grouped matmul.

The loop (:func:`expert_ffn_loop`): per expert, one matmul with the fused (H, N) input slice and one
with the (I, H) output slice, written with ``out=`` into preallocated buffers, the activation applied
to each slice right after its matmul while it is in cache. Its backward is written by hand: weight
gradients go straight into one (E, ...) buffer (no per-expert full-size zero gradients, no stacking
copy) and experts with no tokens are skipped. Experts run concurrently where it pays
(:mod:`lmbricks.moe.concurrency`). Inference with few rows per expert takes the decode path
(:mod:`lmbricks.moe.decode`); inference on the loop path fuses gather, FFN and combine per expert
(:func:`expert_ffn_loop_combined`). The grouped path (:func:`expert_ffn_grouped`) is torch's grouped
matmul (``F.grouped_mm``) with autograd through torch, for CUDA bf16.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from lmbricks.moe.activations import Activation
from lmbricks.moe.concurrency import for_each_expert
from lmbricks.moe.decode import decode_span, ffn_forward_padded
from lmbricks.moe.dispatch import DispatchPlan, grouped_mm_fn
from lmbricks.moe.packed import PackedExperts
from lmbricks.moe.rows import combine_rows, gather_rows, pair_buffer


def _bounds(counts: list[int]) -> list[tuple[int, int, int]]:
    """(expert, start, end) of the non-empty slices."""
    out, start = [], 0
    for e, c in enumerate(counts):
        if c:
            out.append((e, start, start + c))
        start += c
    return out


def _ffn_infer_loop(xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: Activation) -> Tensor:
    """Inference, expert by expert: input matmul, activation, output matmul on the expert's slice.

    Activating each slice right after its matmul keeps it in cache: the whole (S, N) activation
    at once streams ~30 MB through memory twice (measured ~12 ms of 170 in bench/moe.py's forward).
    The temporaries are per expert: one (S, N) buffer (58 MB in the benchmark) is above glibc's
    largest mmap threshold, so every call would map, fault in and zero it afresh.
    """
    y = xs.new_empty(xs.shape[0], w_out.shape[2])  # (S, H)

    def expert(e: int, a0: int, a1: int) -> None:  # temporaries of a few MB, reused by the allocator
        a_e = activation.inplace(torch.mm(xs[a0:a1], w_in[e]))  # (n_e, I)
        torch.mm(a_e, w_out[e], out=y[a0:a1])

    for_each_expert(_bounds(counts), expert, xs)
    return y


def _ffn_forward_loop(
    xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: Activation
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Training forward, expert by expert -> (y, h, a, s): the output and what the backward reads.

    h (S, N) is the input projection, a (S, I) the activation and s (S, I) silu(gate) for gated
    activations (None otherwise); each slice is activated right after its matmul, while it is in cache.
    """
    y = xs.new_empty(xs.shape[0], w_out.shape[2])  # (S, H)
    i = w_out.shape[1]
    h = xs.new_empty(xs.shape[0], w_in.shape[2])  # (S, N)
    a = xs.new_empty(xs.shape[0], i)  # (S, I)
    s = xs.new_empty(xs.shape[0], i) if activation.gated else None  # silu(gate), for the backward

    def expert(e: int, a0: int, a1: int) -> None:
        torch.mm(xs[a0:a1], w_in[e], out=h[a0:a1])
        activation.into(h[a0:a1], a[a0:a1], None if s is None else s[a0:a1])
        torch.mm(a[a0:a1], w_out[e], out=y[a0:a1])

    for_each_expert(_bounds(counts), expert, xs)
    return y, h, a, s


class _ExpertFFNLoop(Function):
    """y_e = act(x_e W_in[e]) W_out[e] for each expert slice; hand-written backward."""

    @staticmethod
    def forward(ctx: Any, xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: Activation) -> Tensor:
        y, h, a, s = _ffn_forward_loop(xs, w_in, w_out, counts, activation)
        ctx.save_for_backward(xs, w_in, w_out, h, a, s)
        ctx.counts, ctx.activation = counts, activation
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        """Expert by expert (cache-local): dW_out, da, dh through the activation, dW_in, dx."""
        xs, w_in, w_out, h, a, s = ctx.saved_tensors
        need_x, need_win, need_wout = ctx.needs_input_grad[:3]
        act: Activation = ctx.activation
        dy = dy.contiguous()
        empty = [e for e, c in enumerate(ctx.counts) if c == 0]
        dw_out = _weight_grad_buffer(w_out, empty) if need_wout else None
        dw_in = _weight_grad_buffer(w_in, empty) if need_win else None
        dxs = dy.new_empty(dy.shape[0], w_in.shape[1]) if need_x else None  # (S, H)
        da = dy.new_empty(dy.shape[0], w_out.shape[1])  # (S, I)

        def expert(e: int, a0: int, a1: int) -> None:
            if dw_out is not None:
                torch.mm(a[a0:a1].t(), dy[a0:a1], out=dw_out[e])
            torch.mm(dy[a0:a1], w_out[e].t(), out=da[a0:a1])
            dh = act.backward(da[a0:a1], h[a0:a1], a[a0:a1], None if s is None else s[a0:a1])  # (n_e, N)
            if dw_in is not None:
                torch.mm(xs[a0:a1].t(), dh, out=dw_in[e])
            if dxs is not None:
                torch.mm(dh, w_in[e].t(), out=dxs[a0:a1])

        for_each_expert(_bounds(ctx.counts), expert, dy)
        return dxs, dw_in, dw_out, None, None


def _weight_grad_buffer(w: Tensor, empty_experts: list[int]) -> Tensor:
    buf = torch.empty_like(w, memory_format=torch.contiguous_format)
    for e in empty_experts:  # experts without tokens get a zero gradient
        buf[e].zero_()
    return buf


def expert_ffn_loop(xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: Activation) -> Tensor:
    """Per-expert matmuls over contiguous slices of the expert-sorted rows.

    Args:
        xs: (S, H) rows sorted by expert.
        w_in: (E, H, N) input projection (N = 2I, gate then up, for gated activations; else I).
        w_out: (E, I, H) output projection.
        counts: rows of each expert (sum S).
        activation: the experts' :class:`~lmbricks.moe.activations.Activation`.

    Returns:
        (S, H) expert outputs in the same order.
    """
    if torch.is_grad_enabled() and (xs.requires_grad or w_in.requires_grad or w_out.requires_grad):
        return _ExpertFFNLoop.apply(xs, w_in, w_out, counts, activation)
    span = decode_span(xs, w_in, w_out, counts)
    if span is not None:
        return ffn_forward_padded(xs, w_in, w_out, counts, span, activation)
    return _ffn_infer_loop(xs, w_in, w_out, counts, activation)


def expert_ffn_loop_combined(
    x: Tensor,
    weights: Tensor,
    plan: DispatchPlan,
    w_in: Tensor,
    w_out: Tensor,
    activation: Activation,
    packed: PackedExperts | None = None,
) -> Tensor:
    """Inference on the loop path, gather to combine in one pass per expert (no autograd).

    Equal to ``combine_rows(expert_ffn_loop(gather_rows(x, plan), ...), weights, plan)``, value for
    value: each expert gathers its own tokens, runs its FFN, scales its rows by their gates and
    writes them to their pair positions, so the (S, H) gathered input, the (S, H) expert output and
    the separate scaling and scatter passes over them disappear, and every expert's work (disjoint
    pair rows) can run concurrently. The padded decode path (few rows per expert) is kept as it is.

    Args:
        x: (T, H) tokens.
        weights: (T, k) gates.
        plan: the DispatchPlan.
        w_in: (E, H, N); w_out: (E, I, H).
        activation: the experts' activation.
        packed: the same weights packed for bf16 on CPU (:mod:`lmbricks.moe.packed`), used instead
            of ``w_in`` / ``w_out`` when given (same values, less CPU time).

    Returns:
        (T, H) in x's dtype.
    """
    if packed is None and decode_span(x, w_in, w_out, plan.counts) is not None:
        ys = expert_ffn_loop(gather_rows(x, plan), w_in, w_out, plan.counts, activation)
        return combine_rows(ys, weights, plan, overwrite=True)
    acc = torch.promote_types(x.dtype, torch.float32)  # fp32 accumulation for bf16 / fp16
    w_sorted = weights.reshape(-1).index_select(0, plan.order).to(acc)  # (S,)
    t, k, h = plan.num_tokens, plan.top_k, w_out.shape[2]
    buf = pair_buffer(t * k, h, plan.num_routed, x.new_empty(0, dtype=acc))  # (T*k, H) pair order

    def first(x_e: Tensor, e: int) -> Tensor:  # (n_e, H) -> (n_e, N)
        return torch.mm(x_e, w_in[e]) if packed is None else packed.first(x_e, e)

    def second(a_e: Tensor, e: int) -> Tensor:  # (n_e, I) -> (n_e, H)
        return torch.mm(a_e, w_out[e]) if packed is None else packed.second(a_e, e)

    def expert(e: int, a0: int, a1: int) -> None:
        a_e = activation.inplace(first(x.index_select(0, plan.tokens[a0:a1]), e))
        y_e = second(a_e, e).to(acc).mul_(w_sorted[a0:a1, None])  # (n_e, H)
        buf.index_copy_(0, plan.order[a0:a1], y_e)

    for_each_expert(_bounds(plan.counts), expert, x)
    out = buf.view(t, k, h).sum(1) if k > 1 else buf
    return out.to(x.dtype)


class _ContiguousGrad(Function):
    """Identity whose backward makes the gradient contiguous (CPU grouped_mm's backward fails on
    stride-0 gradients such as those of ``y.sum()``)."""

    @staticmethod
    def forward(_ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(_ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


def expert_ffn_grouped(xs: Tensor, w_in: Tensor, w_out: Tensor, counts: Tensor, activation: Activation) -> Tensor:
    """The same as ``expert_ffn_loop`` with torch's grouped matmul (autograd through torch).

    Args:
        xs: (S, H) rows sorted by expert.
        w_in: (E, H, N); w_out: (E, I, H).
        counts: (E,) rows of each expert, as a tensor.
        activation: the experts' activation.

    Returns:
        (S, H).
    """
    gmm = grouped_mm_fn()
    offs = torch.cumsum(counts, 0, dtype=torch.int32)
    h = _ContiguousGrad.apply(gmm(xs, w_in, offs=offs))  # (S, N)
    a, _ = activation(h)
    return _ContiguousGrad.apply(gmm(a, w_out, offs=offs))  # (S, H)
