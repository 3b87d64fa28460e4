"""Online RL against a reward model: GRPO and RLOO advantages and the KL-penalised policy-gradient loss.

Each prompt gets k sampled responses with rewards r_1..r_k. The advantage of response i is

- **RLOO** (arXiv 2402.14740): ``r_i - mean(r_j, j != i)``, the leave-one-out baseline;
- **GRPO** (arXiv 2402.03300): ``(r_i - mean(r)) / (std(r) + eps)``, the group-normalised reward.

Both sum to zero over a prompt's group, so a constant reward gives every response advantage exactly
0 and, with the KL coefficient at 0, an exactly zero gradient (tested). The loss of a batch is
``-mean_i(A_i * log pi(y_i|x)) + kl_coef * mean_tokens(k3)`` with the k3 estimator of
KL(pi || ref) per response token, ``exp(ref - pi) - (ref - pi) - 1`` (>= 0, unbiased; arXiv
2402.03300 uses it for GRPO). The samples are on-policy (one update per batch), so no ratio clipping.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Algorithm = Literal["rloo", "grpo"]


def advantages(rewards: Tensor, algorithm: Algorithm, eps: float = 1e-6) -> Tensor:
    """Advantages of a (P, k) reward table (prompt, sample), same shape.

    Args:
        rewards: (P, k) fp32, k >= 2.
        algorithm: ``rloo`` or ``grpo``.
        eps: GRPO's guard against a zero standard deviation.
    """
    k = rewards.shape[1]
    mean = rewards.mean(dim=1, keepdim=True)  # (P, 1)
    if algorithm == "rloo":
        return (rewards - mean) * k / (k - 1)  # r_i - (sum - r_i) / (k - 1)
    return (rewards - mean) / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)


def policy_gradient_loss(
    logp: Tensor, ref_logp: Tensor, mask: Tensor, adv: Tensor, kl_coef: float,
    n_seqs: int | None = None, n_tokens: int | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The RL loss of a batch (or of one micro-batch of it) and its KL term.

    ``-sum_i(A_i * log pi(y_i|x)) / n_seqs + kl_coef * sum_tokens(k3) / n_tokens``: with the batch's
    totals as ``n_seqs`` and ``n_tokens``, the micro-batch losses add up to the batch's.

    Args:
        logp: (B, R) the policy's per-token log-probabilities of its samples (with gradients).
        ref_logp: (B, R) the reference's (no gradients).
        mask: (B, R) response tokens.
        adv: (B,) advantages (:func:`advantages`, flattened prompt-major).
        kl_coef: weight of the KL penalty.
        n_seqs, n_tokens: the normalisers (default: this batch's B and response tokens).

    Returns:
        ``(loss (), kl sum / n_tokens () detached)``.
    """
    n_seqs = n_seqs or logp.shape[0]
    n_tokens = n_tokens or int(mask.sum())
    d = (ref_logp - logp).masked_fill(~mask, 0.0)
    kl = (torch.exp(d) - d - 1).sum() / max(n_tokens, 1)  # k3 per token, 0 where masked
    loss = -(adv.detach() * logp.sum(-1)).sum() / n_seqs + kl_coef * kl
    return loss, kl.detach()
