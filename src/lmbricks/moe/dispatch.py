"""Token dispatch planning: which (token, slot) pairs each expert computes, and on which path.

The layer's dispatch (the floor is a dense FFN with the same active FLOPs), one idea a module:
  1. planning, here: :func:`plan_dispatch`'s one stable argsort of the T*k flat expert ids groups
     the pairs by expert (dropped pairs sort after the last expert and are never computed);
     ``bincount`` gives the slice of each expert. :func:`choose_impl` picks the execution path.
  2. :mod:`lmbricks.moe.rows`: the gather into expert order and the weighted combine back, as
     autograd functions (fp32 sum over the k slots, a fixed order: deterministic on every device).
  3. :mod:`lmbricks.moe.expert_ffn`: the experts' FFNs on contiguous slices (the loop with out=
     matmuls and a hand-written backward, or torch's grouped matmul), :mod:`lmbricks.moe.decode` for
     few rows per expert; the activation is an object (:mod:`lmbricks.moe.activations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DispatchImpl = Literal["auto", "loop", "grouped"]

# Below this many routed pairs the loop is used whatever the device: it reads only touched experts.
GROUPED_MIN_PAIRS = 256


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


def grouped_mm_fn() -> Any:
    """torch's grouped matmul (``F.grouped_mm``, or the older ``torch._grouped_mm``), or None."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_available(x: Tensor) -> bool:
    """Whether torch offers a grouped matmul for x's device and dtype (CPU: any; CUDA: bf16 on sm80+)."""
    if grouped_mm_fn() is None:
        return False
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)
    return x.device.type == "cpu"


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
