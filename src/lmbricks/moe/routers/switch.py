"""Switch routing: top-1 token choice (Fedus et al. 2021)."""

from __future__ import annotations

from torch import Tensor
from typing_extensions import override

from lmbricks.moe.routers.base import Router, register_router
from lmbricks.moe.types import RouterOutput


@register_router("switch", reference="https://arxiv.org/abs/2101.03961")
class SwitchRouter(Router):
    """Each token goes to its most probable expert, scaled by that probability p_i(x).

    The gate is never renormalised (it would be 1 and the router would get no gradient from the
    task loss). Pair with the Switch balancing loss and, with a capacity factor, token dropping.
    """

    fixed_top_k = 1

    top_k = 1

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:
        """Args: x (T, H); mask unused. Returns: RouterOutput with one slot."""
        logits = self.logits(x)  # (T, E)
        probs = logits.softmax(dim=-1)
        weights, indices = probs.max(dim=-1, keepdim=True)  # (T, 1)
        return RouterOutput(weights=weights, indices=indices, logits=logits, probs=probs)
