"""Dense soft gating: every expert sees every token, weighted by the softmax (Jacobs et al. 1991)."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from lmbricks.moe.routers.base import Router, register_router
from lmbricks.moe.types import RouterOutput


@register_router("dense", reference="https://doi.org/10.1162/neco.1991.3.1.79")
class DenseRouter(Router):
    """y = sum_i softmax(x W^T)_i E_i(x): the full mixture, E slots per token (slot j = expert j).

    Costs E dense FFNs; useful as the soft baseline that sparse routers approximate, and for small
    expert counts (soft MoE of adapters).
    """

    token_choice = False

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:
        """Args: x (T, H); mask unused. Returns: RouterOutput with E slots."""
        logits = self.logits(x)  # (T, E)
        probs = logits.softmax(dim=-1)
        indices = torch.arange(self.num_experts, device=x.device).expand(x.shape[0], -1)  # (T, E)
        return RouterOutput(weights=probs, indices=indices, logits=logits, probs=probs)
