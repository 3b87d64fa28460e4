"""A fused projection (q/k/v, gate/up) whose outputs are used apart, with a backward that needs no concat.

The reference LM stores q/k/v as one ``qkv`` weight and gate/up as one ``gate_up`` weight (one
tensor per checkpoint entry group, one matmul at inference). Under autograd, splitting the fused
output makes the backward concatenate the parts' gradients into one (N, sum sizes) buffer before
the weight and input gradients (``aten::cat`` was 43 of 2230 ms of thread CPU time per training
step of bench/train_lm.py, against 9 for transformers' separate projections). Here each part is its
own matmul with a row block of the weight (a view), and the backward writes each part's weight
gradient straight into its row block and accumulates the input gradient with ``addmm_``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function


class _SplitLinear(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, sizes: tuple[int, ...]) -> tuple[Tensor, ...]:
        ctx.save_for_backward(x, weight)
        ctx.sizes, ctx.has_bias = sizes, bias is not None
        outs, start = [], 0
        for size in sizes:
            b = None if bias is None else bias[start : start + size]
            outs.append(F.linear(x, weight[start : start + size], b))  # (..., size)
            start += size
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x2 = x.reshape(-1, x.shape[-1])  # (N, H)
        dw = torch.empty_like(weight) if need_w else None
        db = weight.new_empty(weight.shape[0]) if need_b and ctx.has_bias else None
        dx: Tensor | None = None
        start = 0
        for size, g in zip(ctx.sizes, grads, strict=True):
            rows = slice(start, start + size)
            start += size
            if g is None:  # this part did not reach the loss
                if dw is not None:
                    dw[rows].zero_()
                if db is not None:
                    db[rows].zero_()
                continue
            g2 = g.reshape(-1, size)  # (N, size)
            if dw is not None:
                torch.mm(g2.t(), x2, out=dw[rows])
            if db is not None:
                torch.sum(g2, 0, out=db[rows])
            if need_x:
                dx = torch.mm(g2, weight[rows]) if dx is None else dx.addmm_(g2, weight[rows])
        if need_x and dx is None:
            dx = torch.zeros_like(x2)
        return (None if dx is None else dx.view(x.shape)), dw, db, None


def split_linear(linear: nn.Module, x: Tensor, sizes: tuple[int, ...]) -> tuple[Tensor, ...]:
    """``linear(x).split(sizes, -1)``, with a concat-free backward when training a plain ``nn.Linear``.

    Args:
        linear: the fused projection; anything but a plain ``nn.Linear`` without hooks (a LoRA
            wrapper, say) runs as its own module, and so does every call under autocast.
        x: (..., H) input.
        sizes: output widths of the parts (summing to the weight's rows).

    Returns:
        The parts, (..., size) each.
    """
    plain = type(linear) is nn.Linear and not linear._forward_hooks and not linear._forward_pre_hooks
    training = torch.is_grad_enabled() and (x.requires_grad or linear.weight.requires_grad)
    if plain and training and not torch.is_autocast_enabled(x.device.type):  # autocast: torch's own casts
        return _SplitLinear.apply(x, linear.weight, linear.bias, tuple(sizes))
    return linear(x).split(list(sizes), dim=-1)
