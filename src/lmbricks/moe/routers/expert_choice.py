"""Expert-choice routing (Zhou et al. 2022): experts pick tokens, not tokens experts."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from typing_extensions import override

from lmbricks.moe.routers.base import Router, register_router
from lmbricks.moe.types import RouterOutput

if TYPE_CHECKING:
    from lmbricks.moe.config import MoEConfig


def expert_choice_capacity(num_tokens: int, capacity: float, num_experts: int) -> int:
    """Tokens each expert takes: k = n * c / e, rounded, in [1, n]."""
    if num_tokens == 0:
        return 0
    return max(1, min(num_tokens, math.floor(num_tokens * capacity / num_experts + 0.5)))


@register_router("expert_choice", reference="https://arxiv.org/abs/2202.09368")
class ExpertChoiceRouter(Router):
    """S = softmax(x W^T) over experts; each expert takes its top-k tokens, k = n * c / e.

    Every expert processes exactly k tokens (perfect balance by construction, no balancing loss
    needed); a token may be taken by zero, one or several experts. Returned as E slots per token
    (slot j = expert j) with ``mask`` marking the chosen pairs; the gate of a pair is S[t, j].

    Unfit for token-by-token decoding: the choice of an expert depends on all n tokens of the
    call (the whole batch and sequence). At decode time there is one new token per sequence, so
    the selection is not the one made in training, and during training a token's output depends
    on later tokens of its sequence (and on other sequences), a causality leak for language models.
    Use it for encoders, or for decoders only with a token-choice router at inference.
    """

    token_choice = False

    def __init__(self, hidden_size: int, num_experts: int, capacity: float = 1.0, jitter: float = 0.0) -> None:
        super().__init__(hidden_size, num_experts, jitter)
        self.capacity = capacity

    @classmethod
    def from_config(cls, config: MoEConfig) -> ExpertChoiceRouter:
        return cls(config.hidden_size, config.num_experts, config.expert_choice_capacity, config.router_jitter)

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:
        """Args: x (T, H); mask (T,) True for real tokens (padding is never chosen).

        Returns:
            RouterOutput with E slots: indices (T, E) = expert ids, weights (T, E) = S where chosen
            else 0, mask (T, E) chosen pairs.
        """
        t = x.shape[0]
        logits = self.logits(x)  # (T, E)
        probs = logits.softmax(dim=-1)
        scores = probs
        n_valid = t
        if mask is not None:
            valid = mask.reshape(t).bool()
            n_valid = int(valid.sum())
            scores = probs.masked_fill(~valid[:, None], -1.0)  # below every probability
        k = expert_choice_capacity(n_valid, self.capacity, self.num_experts)
        chosen = scores.detach().t().topk(k, dim=-1).indices  # (E, k) token ids per expert
        pair_mask = torch.zeros(t, self.num_experts, dtype=torch.bool, device=x.device)
        pair_mask.scatter_(0, chosen.t(), True)  # (T, E)
        weights = probs * pair_mask
        indices = torch.arange(self.num_experts, device=x.device).expand(t, -1)  # (T, E)
        return RouterOutput(weights=weights, indices=indices, logits=logits, probs=probs, mask=pair_mask)
