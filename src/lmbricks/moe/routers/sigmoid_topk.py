"""Sigmoid top-k with a selection-only bias and aux-loss-free balancing (DeepSeek-V3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from typing_extensions import override

from lmbricks.moe.routers.base import Router, register_router
from lmbricks.moe.types import RouterOutput

if TYPE_CHECKING:
    from lmbricks.moe.config import MoEConfig


@register_router("sigmoid_topk", reference="https://arxiv.org/abs/2408.15664")
class SigmoidTopKRouter(Router):
    """s = sigmoid(x W^T); select top-k of s + b; gate = s (not s + b), renormalised over the k.

    The bias b (a buffer, not a parameter) only steers selection. After each optimiser step the
    training loop calls ``update_bias(aux.tokens_per_expert)``: b_i += rate * sign(mean load - load_i),
    pushing tokens from overloaded to underloaded experts with no gradient interference (Wang et
    al. 2024, "Auxiliary-loss-free load balancing"; DeepSeek-V3). ``probs`` are the affinities
    normalised to sum to 1 per token (DeepSeek-V3's sequence-wise balance loss uses them).
    """

    balances_by_bias = True

    bias: Tensor

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        renormalize: bool = True,
        bias_update_rate: float = 0.0,
        scaling_factor: float = 1.0,
        jitter: float = 0.0,
    ) -> None:
        super().__init__(hidden_size, num_experts, jitter)
        self.top_k = top_k
        self.renormalize = renormalize
        self.bias_update_rate = bias_update_rate
        self.scaling_factor = scaling_factor  # DeepSeek-V3's routed_scaling_factor (2.5 there)
        self.register_buffer("bias", torch.zeros(num_experts))

    @classmethod
    def from_config(cls, config: MoEConfig) -> SigmoidTopKRouter:
        return cls(
            config.hidden_size,
            config.num_experts,
            config.top_k,
            config.renormalize,
            config.bias_update_rate,
            jitter=config.router_jitter,
        )

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:
        """Args: x (T, H); mask unused. Returns: RouterOutput with k slots."""
        logits = self.logits(x)  # (T, E)
        scores = logits.sigmoid()
        indices = (scores.detach() + self.bias.float()).topk(self.top_k, dim=-1).indices  # (T, k)
        weights = scores.gather(1, indices)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights * self.scaling_factor
        probs = scores / scores.sum(dim=-1, keepdim=True)
        return RouterOutput(weights=weights, indices=indices, logits=logits, probs=probs)

    @torch.no_grad()
    def update_bias(self, tokens_per_expert: Tensor, rate: float | None = None) -> Tensor:
        """b_i += rate * sign(mean(load) - load_i); call once per optimiser step.

        Args:
            tokens_per_expert: (E,) load of each expert over the step (sum over layers' calls or
                micro-batches, and all-reduced across data-parallel ranks, by the caller).
            rate: step size; defaults to the configured ``bias_update_rate``.

        Returns:
            The new bias (E,).
        """
        step = self.bias_update_rate if rate is None else rate
        load = tokens_per_expert.to(self.bias.device, torch.float32)
        self.bias.add_(step * torch.sign(load.mean() - load))
        return self.bias
