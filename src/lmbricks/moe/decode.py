"""The decode path: few rows per expert, all touched experts in one batched product by K-slabs.

Decoding (inference, every expert slice at most ``SMALL_ROWS`` rows, fp32 on CPU): the rows are
padded to (B, m, H) for the contiguous range of touched experts and each projection is one batched
product by K-slabs (:func:`slab_bmm`): it streams each weight once where MKL's fp32 GEMM with 2-8 rows
packs it first (about two passes; the slabs measured ~25% less CPU time for the (512, 3584) gate_up
slice), and it issues four batched kernels instead of two per expert: on a busy machine every
parallel region waits for its threads to be scheduled, so their count sets the wall time. When the
touched experts are few and spread out (one token), the loop touches only their weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmbricks.moe.activations import Activation

# Inference with at most this many rows per expert takes the padded K-slab path on CPU.
SMALL_ROWS = 8
K_SLAB = 32


def slab_eligible(x: Tensor, w: Tensor, k: int) -> bool:
    """Whether (., K) @ w can run by K-slabs: CPU, fp32/fp64, K a multiple of ``K_SLAB``, w contiguous."""
    return (
        k > K_SLAB
        and k % K_SLAB == 0
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and w.is_contiguous()
    )


def slab_bmm(x: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """(B, m, K) @ (B, K, N) -> (B, m, N) for few rows m, as sums over K-slabs of ``K_SLAB``.

    One batched matmul of (B * K / K_SLAB) small products and one sum; w must be contiguous (its
    slabs are a view). Falls back to ``bmm`` when K is not a multiple of ``K_SLAB``.
    """
    b, m, k = x.shape
    n = w.shape[2]
    if not slab_eligible(x, w, k):
        return torch.bmm(x, w, out=out)
    s = k // K_SLAB
    xs = x.reshape(b, m, s, K_SLAB).transpose(1, 2).reshape(b * s, m, K_SLAB)  # (B*s, m, K_SLAB), small copy
    parts = torch.bmm(xs, w.reshape(b * s, K_SLAB, n))  # (B*s, m, N)
    return torch.sum(parts.view(b, s, m, n), 1, out=out)


def padded_span(counts: list[int]) -> tuple[int, int] | None:
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


def decode_span(xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int]) -> tuple[int, int] | None:
    """The span of :func:`padded_span` where the weights and rows suit the slab path, else None."""
    if not (slab_eligible(xs, w_in, w_in.shape[1]) and w_out.is_contiguous()):
        return None
    return padded_span(counts)


def ffn_forward_padded(
    xs: Tensor, w_in: Tensor, w_out: Tensor, counts: list[int], span: tuple[int, int], activation: Activation
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
    h = slab_bmm(x, w_in[lo:hi])  # (B, m, N)
    a = activation.inplace(h.view(b * m, -1))  # (B*m, I)
    y = slab_bmm(a.view(b, m, -1), w_out[lo:hi])  # (B, m, H)
    return y[expert, pos]  # (S, H)
