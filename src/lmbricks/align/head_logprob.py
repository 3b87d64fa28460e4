"""Per-token log-probabilities through the output head, in chunks of rows, never holding the (N, V) logits.

``head_logprobs(h, W, targets)`` equals ``log_softmax(h @ W.T)[n, targets[n]]`` (N,) in fp32, with the
same gradients (to float rounding), but the logits exist one chunk of rows at a time (about
``CHUNK_ELEMENTS`` of them, 32 MB in fp32) and none is kept for the backward pass. This is what RL and
DPO need: unlike the mean cross-entropy of :func:`lmbricks.nn.loss.linear_cross_entropy`, the
per-token values are used downstream (advantages, the KL to the reference, sums per sequence), so
the gradient arriving at each token, ``g[n]``, is only known in the backward pass. With
``p = softmax(z)`` and ``q = p - onehot(target)``:

- ``dL/dh[n] = -g[n] * (q[n] @ W)``: when W is frozen (a LoRA run's tied head) ``a[n] = -(q[n] @ W)``
  (N, H) is computed in the forward pass, chunk by chunk, and the backward pass only scales it;
- ``dL/dW = -sum_n g[n] * q[n]^T h[n]`` needs ``g``: when W is trained, the forward keeps the
  logsumexp (N,) and the backward recomputes each chunk's logits (one more head product).

Under autocast the products run in autocast's dtype and the softmax in fp32, as the unfused
``lm_head(h).float()`` then ``cross_entropy`` does; ``q`` is formed in fp32 (``1 - p_target`` exactly)
and rounded once, as the unfused backward rounds ``dL/dz``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

CHUNK_ELEMENTS = 1 << 23  # logits per chunk


def _chunk_logits(hc: Tensor, w: Tensor, cols: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk: fp32 logits (c, V), their logsumexp (c,), the target's log-probability (c,)."""
    z = (hc @ w.T).float()  # (c, V): rounded to the compute dtype first, as the unfused head
    lse = torch.logsumexp(z, dim=-1)  # (c,)
    return z, lse, z.gather(1, cols).squeeze(1) - lse


def _minus_q(z: Tensor, lse: Tensor, cols: Tensor) -> Tensor:
    """``onehot - softmax`` of fp32 logits (c, V), in place of ``z`` (dlogp/dz)."""
    p = z.sub_(lse[:, None]).exp_()  # (c, V) softmax
    return p.neg_().scatter_add_(1, cols, torch.ones_like(cols, dtype=p.dtype))


class _HeadLogprobs(Function):
    """Forward in chunks; backward scales the saved dlogp/dh, or recomputes the chunks for dW."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, weight: Tensor, targets: Tensor, dtype: torch.dtype, chunk: int) -> Tensor:
        need_h, need_w = ctx.needs_input_grad[:2]
        hc, w = h.to(dtype), weight.to(dtype)  # (N, H), (V, H) in the compute dtype
        cols = targets[:, None]  # (N, 1)
        logp = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)  # (N,)
        lse = torch.empty_like(logp)
        a = torch.empty_like(hc) if need_h and not need_w else None  # (N, H) dlogp/dh
        with torch.autocast(h.device.type, enabled=False):  # every cast here is explicit
            for start in range(0, h.shape[0], chunk):
                rows = slice(start, start + chunk)
                z, lse[rows], logp[rows] = _chunk_logits(hc[rows], w, cols[rows])
                if a is not None:
                    torch.mm(_minus_q(z, lse[rows], cols[rows]).to(dtype), w, out=a[rows])
        ctx.dtype, ctx.chunk, ctx.h_dtype = dtype, chunk, h.dtype
        if need_w:
            ctx.save_for_backward(hc, weight, targets, lse)
        else:
            ctx.save_for_backward(a)
        return logp

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[1]:
            (a,) = ctx.saved_tensors
            dh = None if a is None else (a.float() * grad[:, None]).to(ctx.h_dtype)
            return dh, None, None, None, None
        hc, weight, targets, lse = ctx.saved_tensors
        w, cols = weight.to(ctx.dtype), targets[:, None]
        dh = torch.empty(hc.shape, dtype=ctx.h_dtype, device=hc.device) if ctx.needs_input_grad[0] else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=hc.device)  # (V, H) accumulated in fp32
        with torch.autocast(hc.device.type, enabled=False):
            for start in range(0, hc.shape[0], ctx.chunk):
                rows = slice(start, start + ctx.chunk)
                z = (hc[rows] @ w.T).float()  # (c, V) recomputed
                dz = _minus_q(z, lse[rows], cols[rows]).mul_(grad[rows, None]).to(ctx.dtype)  # (c, V) dL/dz
                if dh is not None:
                    dh[rows] = dz @ w
                dw += (dz.T @ hc[rows]).float()
        return dh, dw.to(weight.dtype), None, None, None


def head_logprobs(h: Tensor, weight: Tensor, targets: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """``log_softmax(h @ weight.T)`` at ``targets``, one chunk of rows at a time.

    Args:
        h: (N, H) final hidden states.
        weight: (V, H) output projection (a bias-free head).
        targets: (N,) long token ids in ``[0, V)``.
        chunk_elements: logits per chunk (rows per chunk: ``chunk_elements // V``, at least 1).

    Returns:
        (N,) fp32 log-probabilities; under autocast the products run in autocast's dtype.
    """
    if h.dim() != 2 or targets.shape != h.shape[:1] or weight.dim() != 2 or weight.shape[1] != h.shape[1]:
        raise ValueError(f"expected h (N, H), weight (V, H), targets (N,); got {tuple(h.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(targets.shape)}")  # fmt: skip
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    chunk = max(1, chunk_elements // weight.shape[0])
    out: Tensor = _HeadLogprobs.apply(h, weight, targets, dtype, chunk)
    return out
