"""The Bradley-Terry preference loss and pairwise accuracy (pure tensor functions).

Under the Bradley-Terry model P(chosen > rejected) = sigmoid(r_c - r_r); the loss is the negative
log-likelihood of the observed preferences, -mean(log sigmoid(r_c - r_r)) (InstructGPT's reward
loss, arXiv 2203.02155).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """-mean(log sigmoid(r_chosen - r_rejected)) over (N,) scores, computed stably (softplus)."""
    return F.softplus(-(r_chosen.float() - r_rejected.float())).mean()


def pair_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> float:
    """Fraction of pairs with r_chosen > r_rejected (ties count as wrong)."""
    return float((r_chosen > r_rejected).float().mean()) if r_chosen.numel() else float("nan")
