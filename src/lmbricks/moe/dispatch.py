"""Token dispatch: sort (token, slot) pairs by expert, run each expert on a contiguous slice, undo.

Design (the floor is a dense FFN with the same active FLOPs):
  1. ``plan_dispatch``: one stable argsort of the T*k flat expert ids groups the pairs by expert
     (dropped pairs sort after the last expert and are never computed); ``bincount`` gives the
     slice of each expert.
  2. ``gather_rows``: one ``index_select`` copies the tokens into expert order, (S, H).
  3. ``expert_ffn``: per expert, one matmul with the fused (H, 2I) gate_up slice and one with the
     (I, H) down slice, written with ``out=`` into preallocated buffers; silu is written into a
     contiguous buffer and multiplied by the up half in place. The backward is written by hand:
     weight gradients go straight into one (E, ...) buffer (no per-expert full-size zero
     gradients, no stacking copy) and experts with no tokens are skipped. Or ``torch`` grouped
     matmul (``F.grouped_mm``) where it is available and faster (CUDA bf16).
  4. ``combine_rows``: rows are weighted by their gate, go back to flat pair order (T*k, H), and
     the k outputs of a token are summed over the slot axis in fp32: a fixed order, deterministic
     on every device (no atomics, no index_add_). Its backward gathers dy once in expert order.
Decoding (inference, every expert slice at most ``SMALL_ROWS`` rows, fp32 on CPU): the rows are
padded to (B, m, H) for the contiguous range of touched experts and each projection is one batched
product by K-slabs (``_slab_bmm``): it streams each weight once where MKL's fp32 GEMM with 2-8 rows
packs it first (about two passes; the slabs measured ~25% less CPU time for the (512, 3584) gate_up
slice), and it issues four batched kernels instead of two per expert: on a busy machine every
parallel region waits for its threads to be scheduled, so their count sets the wall time. When the
touched experts are few and spread out (one token), the loop touches only their weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from lmbricks.moe.concurrency import for_each_expert

DispatchImpl = Literal["auto", "loop", "grouped"]

# Below this many routed pairs the loop is used whatever the device: it reads only touched experts.
GROUPED_MIN_PAIRS = 256
# Inference with at most this many rows per expert takes the padded K-slab path on CPU.
SMALL_ROWS = 8
K_SLAB = 32


@dataclass
class DispatchPlan:
    """Where each routed (token, slot) pair goes.

    Attributes:
        order: (S,) flat pair ids t*k + j of the routed pairs, grouped by expert (stable).
        tokens: (S,) token of each sorted pair (order // k).
        counts: per-expert pair counts as Python ints (the slice lengths).
        tokens_per_expert: (E,) long, the same counts as a tensor.
        num_tokens: T.
        top_k: k slots per token.
    """

    order: Tensor
    tokens: Tensor
    counts: list[int]
    tokens_per_expert: Tensor
    num_tokens: int
    top_k: int

    @property
    def num_pairs(self) -> int:
        """T * k, routed or not."""
        return self.num_tokens * self.top_k

    @property
    def num_routed(self) -> int:
        """S, the pairs that are computed."""
        return int(self.order.shape[0])


def plan_dispatch(indices: Tensor, keep: Tensor | None, num_experts: int) -> DispatchPlan:
    """Group the routed pairs by expert.

    Args:
        indices: (T, k) expert of each pair.
        keep: (T, k) bool pairs to compute, or None for all.
        num_experts: E.

    Returns:
        The DispatchPlan.
    """
    t, k = indices.shape
    flat = indices.reshape(-1)
    if keep is None:
        order = torch.argsort(flat, stable=True)
        tokens_per_expert = torch.bincount(flat, minlength=num_experts)
    else:
        key = torch.where(keep.reshape(-1), flat, num_experts)  # not routed -> after the last expert
        counts_all = torch.bincount(key, minlength=num_experts + 1)
        tokens_per_expert = counts_all[:num_experts]
        order = torch.argsort(key, stable=True)[: t * k - int(counts_all[num_experts])]
    tokens = torch.div(order, k, rounding_mode="floor")
    return DispatchPlan(order, tokens, tokens_per_expert.tolist(), tokens_per_expert, t, k)


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
        return _sum_by_token(grad, order, t, k), None, None, None


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
    out = _sum_by_token(yw, order, weights.shape[0], top_k)
    return out.to(ys.dtype), w_sorted


def _sum_by_token(rows: Tensor, order: Tensor, num_tokens: int, top_k: int) -> Tensor:
    """(S, H) rows in expert order -> (T, H): each token's rows summed over its k slots, fixed order.

    The rows are scattered to (T*k, H) pair order and the k slots summed: no atomics, deterministic
    on every device. (CPU ``index_add_`` / ``scatter_add_`` were measured: faster with one thread,
    but 5-25x slower in wall time with two on a loaded machine.)
    """
    t, h = num_tokens, rows.shape[1]
    buf = _pair_buffer(t * top_k, h, rows.shape[0], rows)
    buf.index_copy_(0, order, rows)  # (T*k, H), zero rows for pairs that were not routed
    return buf.view(t, top_k, h).sum(1) if top_k > 1 else buf


def _pair_buffer(num_pairs: int, width: int, num_routed: int, like: Tensor) -> Tensor:
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


# ----------------------------------------------------------------------------- activations


def _silu(g: Tensor) -> Tensor:
    """silu of a column slice of h into a fresh contiguous buffer.

    In isolation ``F.silu`` of the strided (S, I) half of h measured ~2.5x slower on CPU than
    writing it with ``out=`` into a contiguous buffer (18 ms vs 7 ms for 4096 x 1792 fp32; no
    difference was measurable in the whole layer). Under autograd (the grouped path): ``F.silu``.
    """
    if torch.is_grad_enabled() and g.requires_grad:
        return F.silu(g)
    return torch.ops.aten.silu.out(g, out=torch.empty(g.shape, dtype=g.dtype, device=g.device))


def _activate(h: Tensor, activation: str) -> tuple[Tensor, Tensor | None]:
    """h (S, N) -> (a, s): a the expert's hidden activation, s silu(gate) for the gated backward."""
    if activation == "swiglu":
        i = h.shape[1] // 2
        s = _silu(h[:, :i])
        return s * h[:, i:], s
    if activation == "gelu":
        return F.gelu(h), None
    if activation == "relu":
        return F.relu(h), None
    raise ValueError(f"unknown activation {activation!r}")


def _activate_inplace(h: Tensor, activation: str) -> Tensor:
    """The same as ``_activate(h)[0]`` for inference, reusing memory where it can."""
    if activation == "swiglu":
        i = h.shape[1] // 2
        return _silu(h[:, :i]).mul_(h[:, i:])
    if activation == "gelu":
        return F.gelu(h)
    return h.relu_()


def _activation_backward(da: Tensor, h: Tensor, a: Tensor, s: Tensor | None, activation: str) -> Tensor:
    """dL/dh (S, N) from dL/da (S, I)."""
    if activation == "swiglu":
        assert s is not None
        i = da.shape[1]
        g, u = h[:, :i], h[:, i:]
        dh = torch.empty_like(h)
        dg = dh[:, :i]
        torch.mul(da, u, out=dg)  # dL/ds, then silu' in place: no (S, I) temporary
        torch.ops.aten.silu_backward.grad_input(dg, g, grad_input=dg)
        torch.mul(da, s, out=dh[:, i:])
        return dh
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(da, h)
    return torch.ops.aten.threshold_backward(da, a, 0)


# ----------------------------------------------------------------------------- loop path


def _bounds(counts: list[int]) -> list[tuple[int, int, int]]:
    """(expert, start, end) of the non-empty slices."""
    out, start = [], 0
    for e, c in enumerate(counts):
        if c:
            out.append((e, start, start + c))
        start += c
    return out


def _slab_eligible(x: Tensor, w: Tensor, k: int) -> bool:
    return (
        k > K_SLAB
        and k % K_SLAB == 0
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and w.is_contiguous()
    )


def _slab_bmm(x: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """(B, m, K) @ (B, K, N) -> (B, m, N) for few rows m, as sums over K-slabs of ``K_SLAB``.

    One batched matmul of (B * K / K_SLAB) small products and one sum; w must be contiguous (its
    slabs are a view). Falls back to ``bmm`` when K is not a multiple of ``K_SLAB``.
    """
    b, m, k = x.shape
    n = w.shape[2]
    if not _slab_eligible(x, w, k):
        return torch.bmm(x, w, out=out)
    s = k // K_SLAB
    xs = x.reshape(b, m, s, K_SLAB).transpose(1, 2).reshape(b * s, m, K_SLAB)  # (B*s, m, K_SLAB), small copy
    parts = torch.bmm(xs, w.reshape(b * s, K_SLAB, n))  # (B*s, m, N)
    return torch.sum(parts.view(b, s, m, n), 1, out=out)


def _padded_span(counts: list[int]) -> tuple[int, int] | None:
    """(lo, hi): the expert range of the padded decode path, or None to use the loop.

    Taken when every expert slice is small and the contiguous range of touched experts holds at most
    a quarter as many untouched experts (at least one) as touched ones, whose weights it reads for
    nothing (with half, measured: 15% more CPU time than the loop over the touched experts).
    """
    touched = [e for e, c in enumerate(counts) if c]
    if not touched or max(counts) > SMALL_ROWS:
        return None
    lo, hi = touched[0], touched[-1] + 1
    if (hi - lo) - len(touched) > max(1, len(touched) // 4):
        return None
    return lo, hi


def _ffn_forward_padded(
    xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], span: tuple[int, int], activation: str
) -> Tensor:
    """Inference for few rows per expert: all experts of ``span`` in one batched product per projection.

    Rows are padded to the largest slice (B, m, H) and multiplied by the contiguous weight range
    w[lo:hi] (a view, no copy) by K-slabs: four batched kernels in all, where the loop issues two
    per expert (each a parallel region: on a busy machine every region waits for its threads).
    """
    lo, hi = span
    b, m, hid = hi - lo, max(counts), xs.shape[1]
    cnt = torch.tensor(counts[lo:hi], device=xs.device)
    expert = torch.repeat_interleave(torch.arange(b, device=xs.device), cnt)  # (S,) slot of each row
    pos = torch.arange(xs.shape[0], device=xs.device) - (torch.cumsum(cnt, 0) - cnt)[expert]  # (S,)
    x = xs.new_zeros(b, m, hid)
    x[expert, pos] = xs  # (B, m, H), zero rows are padding
    h = _slab_bmm(x, w_in[lo:hi])  # (B, m, N)
    a = _activate_inplace(h.view(b * m, -1), activation)  # (B*m, I)
    y = _slab_bmm(a.view(b, m, -1), w_out[lo:hi])  # (B, m, H)
    return y[expert, pos]  # (S, H)


def _activate_into(h: Tensor, a: Tensor, s: Tensor | None, activation: str) -> None:
    """Write act(h) into ``a`` (and silu(gate) into ``s`` for swiglu): one expert's slice, in cache."""
    if activation == "swiglu":
        assert s is not None
        i = a.shape[1]
        torch.ops.aten.silu.out(h[:, :i], out=s)
        torch.mul(s, h[:, i:], out=a)
    elif activation == "gelu":
        torch.ops.aten.gelu.out(h, out=a)
    else:
        torch.clamp(h, min=0, out=a)


def _ffn_infer_loop(xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: str) -> Tensor:
    """Inference, expert by expert: input matmul, activation, output matmul on the expert's slice.

    Activating each slice right after its matmul keeps it in cache: the whole (S, N) activation
    at once streams ~30 MB through memory twice (measured ~12 ms of 170 in bench/moe.py's forward).
    The temporaries are per expert: one (S, N) buffer (58 MB in the benchmark) is above glibc's
    largest mmap threshold, so every call would map, fault in and zero it afresh.
    """
    y = xs.new_empty(xs.shape[0], w_out.shape[2])  # (S, H)

    def expert(e: int, a0: int, a1: int) -> None:  # temporaries of a few MB, reused by the allocator
        a_e = _activate_inplace(torch.mm(xs[a0:a1], w_in[e]), activation)  # (n_e, I)
        torch.mm(a_e, w_out[e], out=y[a0:a1])

    for_each_expert(_bounds(counts), expert, xs)
    return y


def _ffn_forward_loop(
    xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: str
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Training forward, expert by expert -> (y, h, a, s): the output and what the backward reads.

    h (S, N) is the input projection, a (S, I) the activation and s (S, I) silu(gate) for swiglu
    (None otherwise); each slice is activated right after its matmul, while it is in cache.
    """
    y = xs.new_empty(xs.shape[0], w_out.shape[2])  # (S, H)
    i = w_out.shape[1]
    h = xs.new_empty(xs.shape[0], w_in.shape[2])  # (S, N)
    a = xs.new_empty(xs.shape[0], i)  # (S, I)
    s = xs.new_empty(xs.shape[0], i) if activation == "swiglu" else None  # silu(gate), for the backward

    def expert(e: int, a0: int, a1: int) -> None:
        torch.mm(xs[a0:a1], w_in[e], out=h[a0:a1])
        _activate_into(h[a0:a1], a[a0:a1], None if s is None else s[a0:a1], activation)
        torch.mm(a[a0:a1], w_out[e], out=y[a0:a1])

    for_each_expert(_bounds(counts), expert, xs)
    return y, h, a, s


class _ExpertFFNLoop(Function):
    """y_e = act(x_e W_in[e]) W_out[e] for each expert slice; hand-written backward."""

    @staticmethod
    def forward(ctx: Any, xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: str) -> Tensor:
        y, h, a, s = _ffn_forward_loop(xs, w_in, w_out, counts, activation)
        ctx.save_for_backward(xs, w_in, w_out, h, a, s)
        ctx.counts, ctx.activation = counts, activation
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        """Expert by expert (cache-local): dW_out, da, dh through the activation, dW_in, dx."""
        xs, w_in, w_out, h, a, s = ctx.saved_tensors
        need_x, need_win, need_wout = ctx.needs_input_grad[:3]
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
            dh = _activation_backward(
                da[a0:a1], h[a0:a1], a[a0:a1], None if s is None else s[a0:a1], ctx.activation
            )  # (n_e, N)
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


def expert_ffn_loop(xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], activation: str) -> Tensor:
    """Per-expert matmuls over contiguous slices of the expert-sorted rows.

    Args:
        xs: (S, H) rows sorted by expert.
        w_in: (E, H, N) input projection (N = 2I, gate then up, for swiglu; else I).
        w_out: (E, I, H) output projection.
        counts: rows of each expert (sum S).
        activation: "swiglu", "gelu" or "relu".

    Returns:
        (S, H) expert outputs in the same order.
    """
    if torch.is_grad_enabled() and (xs.requires_grad or w_in.requires_grad or w_out.requires_grad):
        return _ExpertFFNLoop.apply(xs, w_in, w_out, counts, activation)
    span = _padded_span(counts) if _slab_eligible(xs, w_in, w_in.shape[1]) and w_out.is_contiguous() else None
    if span is not None:
        return _ffn_forward_padded(xs, w_in, w_out, counts, span, activation)
    return _ffn_infer_loop(xs, w_in, w_out, counts, activation)


def expert_ffn_loop_combined(
    x: Tensor, weights: Tensor, plan: DispatchPlan, w_in: Tensor, w_out: Tensor, activation: str
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
        activation: "swiglu", "gelu" or "relu".

    Returns:
        (T, H) in x's dtype.
    """
    if _slab_eligible(x, w_in, w_in.shape[1]) and w_out.is_contiguous() and _padded_span(plan.counts) is not None:
        ys = expert_ffn_loop(gather_rows(x, plan), w_in, w_out, plan.counts, activation)
        return combine_rows(ys, weights, plan, overwrite=True)
    acc = torch.promote_types(x.dtype, torch.float32)  # fp32 accumulation for bf16 / fp16
    w_sorted = weights.reshape(-1).index_select(0, plan.order).to(acc)  # (S,)
    t, k, h = plan.num_tokens, plan.top_k, w_out.shape[2]
    buf = _pair_buffer(t * k, h, plan.num_routed, x.new_empty(0, dtype=acc))  # (T*k, H) pair order

    def expert(e: int, a0: int, a1: int) -> None:
        a_e = _activate_inplace(torch.mm(x.index_select(0, plan.tokens[a0:a1]), w_in[e]), activation)
        y_e = torch.mm(a_e, w_out[e]).to(acc).mul_(w_sorted[a0:a1, None])  # (n_e, H)
        buf.index_copy_(0, plan.order[a0:a1], y_e)

    for_each_expert(_bounds(plan.counts), expert, x)
    out = buf.view(t, k, h).sum(1) if k > 1 else buf
    return out.to(x.dtype)


# ----------------------------------------------------------------------------- grouped path


def _grouped_mm_fn() -> Any:
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_available(x: Tensor) -> bool:
    """Whether torch offers a grouped matmul for x's device and dtype (CPU: any; CUDA: bf16 on sm80+)."""
    if _grouped_mm_fn() is None:
        return False
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)
    return x.device.type == "cpu"


class _ContiguousGrad(Function):
    """Identity whose backward makes the gradient contiguous (CPU grouped_mm's backward fails on
    stride-0 gradients such as those of ``y.sum()``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


def expert_ffn_grouped(xs: Tensor, w_in: Tensor, w_out: Tensor, counts: Tensor, activation: str) -> Tensor:
    """The same as ``expert_ffn_loop`` with torch's grouped matmul (autograd through torch).

    Args:
        xs: (S, H) rows sorted by expert.
        w_in: (E, H, N); w_out: (E, I, H).
        counts: (E,) rows of each expert, as a tensor.
        activation: "swiglu", "gelu" or "relu".

    Returns:
        (S, H).
    """
    gmm = _grouped_mm_fn()
    offs = torch.cumsum(counts, 0, dtype=torch.int32)
    h = _ContiguousGrad.apply(gmm(xs, w_in, offs=offs))  # (S, N)
    a, _ = _activate(h, activation)
    return _ContiguousGrad.apply(gmm(a, w_out, offs=offs))  # (S, H)


def choose_impl(impl: DispatchImpl, x: Tensor, num_routed: int) -> Literal["loop", "grouped"]:
    """Resolve "auto": the grouped matmul on CUDA bf16 for many pairs, else the loop.

    On CPU the loop with out= matmuls matches or beats ``grouped_mm`` (measured in bench/moe.py);
    for few pairs (decoding) the loop reads only the touched experts' weights.
    """
    if impl == "grouped":
        return "grouped"
    if impl == "loop":
        return "loop"
    if x.device.type == "cuda" and num_routed >= GROUPED_MIN_PAIRS and grouped_mm_available(x):
        return "grouped"
    return "loop"
