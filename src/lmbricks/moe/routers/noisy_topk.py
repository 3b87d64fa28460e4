"""Noisy top-k gating (Shazeer et al. 2017, "Outrageously large neural networks")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from lmbricks.moe.routers.base import register_router, topk_gates
from lmbricks.moe.routers.softmax_topk import SoftmaxTopKRouter
from lmbricks.moe.types import RouterOutput

NOISE_EPSILON = 1e-2  # floor on the noise std, as in the reference implementations


@register_router("noisy_topk", reference="https://arxiv.org/abs/1701.06538")
class NoisyTopKRouter(SoftmaxTopKRouter):
    """H(x) = x W_g + eps * softplus(x W_noise), eps ~ N(0, 1); keep the top k of H, softmax over them.

    Softmax top-k over noisy logits: the same constructor and options, plus the noise projection.

    The noise scale is trainable (``noise``, initialised to zero as in the paper, so the initial std
    is softplus(0) + 0.01). In eval mode there is no noise: routing is deterministic. The clean
    logits and the std are returned so that ``load_loss`` can compute the smooth load estimator.
    """

    def __init__(
        self, hidden_size: int, num_experts: int, top_k: int, renormalize: bool = True, jitter: float = 0.0
    ) -> None:
        super().__init__(hidden_size, num_experts, top_k, renormalize, jitter)
        self.noise = nn.Linear(hidden_size, num_experts, bias=False)
        nn.init.zeros_(self.noise.weight)

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:
        """Args: x (T, H); mask unused. Returns: RouterOutput; noise_std is None in eval mode."""
        clean = self.logits(x)  # (T, E) fp32
        noise_std: Tensor | None = None
        logits = clean
        if self.training:
            noise_std = F.softplus(F.linear(x.float(), self.noise.weight.float())) + NOISE_EPSILON
            logits = clean + torch.randn_like(clean) * noise_std
        probs = logits.softmax(dim=-1)
        # softmax over the kept top-k logits == the top-k softmax probabilities renormalised
        weights, indices = topk_gates(probs, self.top_k, self.renormalize)
        return RouterOutput(
            weights=weights,
            indices=indices,
            logits=logits,
            probs=probs,
            clean_logits=clean,
            noise_std=noise_std,
        )
