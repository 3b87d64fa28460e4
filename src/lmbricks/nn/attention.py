"""Causal self-attention for short bf16 training sequences: batched products instead of flash.

On CPU, SDPA's flash kernel is the largest non-GEMM cost of a bf16 training step (about 18% of
bench/train_lm.py's). At short sequences the whole (T, T) score matrix is small, and two batched
bf16 products (the causal mask and the scale inside the first), a softmax and autograd's backward
run faster: (8, 8 heads, 256, 64) with 4 KV heads, forward + backward, one thread, process CPU
time: 33.9 ms against flash's 64.4 ms. The probabilities saved for the backward cost
B * heads * T^2 * 2 bytes per layer (8 MB there), so this path is taken only up to
:data:`MAX_TOKENS` positions and :data:`MAX_SCORE_BYTES` a layer, and only where it was measured
(CPU, bf16 autocast, causal without a mask or cache); everything else calls SDPA. Its scores are
rounded to bf16 before the fp32 softmax, as in transformers' eager attention under autocast (flash
keeps them in fp32): against an fp64 reference its gradients' errors are up to ~2.5x flash's
(tests/nn/test_short_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Longest sequence the batched path takes (its saved scores grow as T^2).
MAX_TOKENS = 512
#: Most bytes of saved probabilities, B * heads * T^2 * 2, one layer may keep for the backward
#: (flash keeps none): 8 MB at bench/train_lm.py's step; a 30-layer model stays within ~0.5 GB.
MAX_SCORE_BYTES = 16 << 20


def short_causal_applies(q: Tensor, is_causal: bool, has_mask: bool) -> bool:
    """Whether :func:`short_causal_attention` replaces SDPA for these queries (see the module docstring)."""
    training = torch.is_grad_enabled() and q.requires_grad
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    B, nh, T, _ = q.shape
    small = 1 < T <= MAX_TOKENS and B * nh * T * T * 2 <= MAX_SCORE_BYTES
    return q.device.type == "cpu" and training and bf16 and is_causal and not has_mask and small


def short_causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax attention with grouped KV heads, by two batched products.

    Args:
        q: (B, nh, T, hd) queries (cast to bf16, as autocast does for SDPA).
        k: (B, nkv, T, hd) keys, nh a multiple of nkv.
        v: (B, nkv, T, hd) values.

    Returns:
        (B, nh, T, hd), equal to ``F.scaled_dot_product_attention(q, k, v, is_causal=True,
        enable_gqa=True)`` up to rounding.
    """
    with torch.profiler.record_function("short_causal_attention"):  # bench/profile_step.py's "attention"
        return _attend(q, k, v)


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    B, nh, T, hd = q.shape
    nkv = k.shape[1]
    rep = nh // nkv
    # bf16 and contiguous in one pass (as autocast casts SDPA's operands; to() keeps a bf16 tensor's
    # strides, so reshape copies those), then the group views are free
    q, k, v = (t.to(torch.bfloat16, memory_format=torch.contiguous_format) for t in (q, k, v))
    qg = q.reshape(B * nkv, rep * T, hd)  # each KV head's group of query heads, stacked along positions
    kg, vg = k.reshape(B * nkv, T, hd), v.reshape(B * nkv, T, hd)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T) key <= query
    bias = torch.zeros(T, T, dtype=torch.bfloat16, device=q.device).masked_fill_(~causal, float("-inf"))
    # the scale and the mask inside the product: (B nkv, rep T, T) scores
    scores = torch.baddbmm(bias.repeat(rep, 1), qg, kg.transpose(1, 2), alpha=hd**-0.5)
    probs = F.softmax(scores, dim=-1, dtype=torch.bfloat16)  # fp32 inside, rounded once
    return torch.bmm(probs, vg).view(B, nh, T, hd)
