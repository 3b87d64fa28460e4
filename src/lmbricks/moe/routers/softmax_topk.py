"""Softmax top-k token choice (GShard / Mixtral / Qwen2-MoE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor
from typing_extensions import Self, override

from lmbricks.moe.routers.base import Router, register_router, topk_gates
from lmbricks.moe.types import RouterOutput

if TYPE_CHECKING:
    from lmbricks.moe.config import MoEConfig


@register_router("softmax_topk", reference="https://arxiv.org/abs/2401.04088")
class SoftmaxTopKRouter(Router):
    """p = softmax(x W^T); each token takes its k most probable experts.

    With ``renormalize`` the k gates are divided by their sum (Mixtral); without, they keep their
    softmax values (Qwen2-MoE with ``norm_topk_prob=False``).
    """

    def __init__(
        self, hidden_size: int, num_experts: int, top_k: int, renormalize: bool = True, jitter: float = 0.0
    ) -> None:
        super().__init__(hidden_size, num_experts, jitter)
        self.top_k = top_k
        self.renormalize = renormalize

    @classmethod
    def from_config(cls, config: MoEConfig) -> Self:
        return cls(config.hidden_size, config.num_experts, config.top_k, config.renormalize, config.router_jitter)

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:
        """Args: x (T, H); mask unused (token choice is per token). Returns: RouterOutput with k slots."""
        logits = self.logits(x)  # (T, E) fp32
        probs = logits.softmax(dim=-1)
        weights, indices = topk_gates(probs, self.top_k, self.renormalize)
        return RouterOutput(weights=weights, indices=indices, logits=logits, probs=probs)
