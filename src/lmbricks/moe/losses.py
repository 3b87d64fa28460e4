"""Load-balancing and stability losses of MoE routers, as pure tensor functions.

All take an optional token mask (T,) (True = real token) so padding never counts, return an fp32
scalar and are unweighted: the caller multiplies by its coefficient (Switch: 1e-2, z: 1e-3).

- ``importance_loss``: CV^2 of per-expert importance, sum_t G(x_t) (Shazeer et al. 2017).
- ``load_loss``: CV^2 of the smooth load estimator sum_t P(x_t, i) of noisy top-k (same paper).
- ``switch_loss``: N * sum_i f_i P_i (Switch Transformer); exactly 1 for a perfectly balanced router.
- ``z_loss``: mean over tokens of logsumexp(logits)^2 (ST-MoE).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed
from torch import Tensor

_EPS = 1e-10


def _masked_sum(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Sum over tokens (axis 0) of x (T, ...) where mask (T,) is True, and the number of such tokens."""
    if mask is None:
        return x.sum(0), x.new_tensor(float(x.shape[0]))
    m = mask.reshape(x.shape[0]).to(device=x.device, dtype=x.dtype)
    m = m.view(-1, *([1] * (x.dim() - 1)))
    return (x * m).sum(0), m.sum()


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation var(x) / mean(x)^2 (population variance, as tensor2tensor).

    Args:
        x: (E,) non-negative per-expert totals.

    Returns:
        fp32 scalar, 0 when all entries are equal.
    """
    x = x.float()
    if x.numel() < 2:
        return x.new_zeros(())
    return x.var(correction=0) / (x.mean() ** 2 + _EPS)


def importance_loss(gates: Tensor, mask: Tensor | None = None) -> Tensor:
    """CV^2 of the importance sum_t gates[t, i] over the experts (Shazeer et al., eq. 6).

    Args:
        gates: (T, E) gate values; Shazeer uses the sparse gates G(x) (zero outside the top k).
        mask: (T,) True for tokens that count, or None.

    Returns:
        fp32 scalar.
    """
    importance, _ = _masked_sum(gates.float(), mask)  # (E,)
    return cv_squared(importance)


def load_loss(
    clean_logits: Tensor, noisy_logits: Tensor, noise_std: Tensor, k: int, mask: Tensor | None = None
) -> Tensor:
    """CV^2 of the smooth load estimator of noisy top-k gating (Shazeer et al., appendix A).

    P(x, i) = Phi((clean_i - kth_excluding(noisy, k, i)) / std_i) is the probability that expert i
    stays in the top k when only its own noise is redrawn; the k-th largest of the *other*
    components is the (k+1)-th largest noisy logit if i is in the top k, else the k-th.

    Args:
        clean_logits: (T, E) logits before noise.
        noisy_logits: (T, E) logits after noise (those the top-k was taken from).
        noise_std: (T, E) noise standard deviation, > 0.
        k: experts per token.
        mask: (T,) True for tokens that count, or None.

    Returns:
        fp32 scalar; 0 when k >= E (every expert always selected).
    """
    num_experts = clean_logits.shape[-1]
    if k >= num_experts:
        return clean_logits.new_zeros((), dtype=torch.float32)
    clean, noisy, std = clean_logits.float(), noisy_logits.float(), noise_std.float()
    top = noisy.topk(k + 1, dim=-1).values  # (T, k+1), descending
    threshold_if_in = top[:, k : k + 1]  # (k+1)-th largest: the k-th of the others when i is in
    threshold_if_out = top[:, k - 1 : k]  # k-th largest: the k-th of the others when i is out
    is_in = noisy > threshold_if_in
    prob_if_in = torch.special.ndtr((clean - threshold_if_in) / std)
    prob_if_out = torch.special.ndtr((clean - threshold_if_out) / std)
    prob = torch.where(is_in, prob_if_in, prob_if_out)  # (T, E)
    load, _ = _masked_sum(prob, mask)  # (E,)
    return cv_squared(load)


def switch_loss(
    probs: Tensor,
    indices: Tensor,
    num_experts: int,
    mask: Tensor | None = None,
    pair_mask: Tensor | None = None,
    group: Any = None,
) -> Tensor:
    """Switch Transformer balancing loss N * sum_i f_i P_i.

    f_i is the fraction of routed (token, slot) pairs sent to expert i (over all k slots, so a
    balanced top-k router scores 1, not k) and P_i the mean router probability of expert i.
    Only P carries a gradient.

    Args:
        probs: (T, E) router probabilities.
        indices: (T, k) chosen experts.
        num_experts: N.
        mask: (T,) True for tokens that count, or None.
        pair_mask: (T, k) True for pairs that count in f (e.g. expert choice), or None (all pairs).
        group: a process group whose ranks' tokens all count in f (the global load), or None
            (these tokens only). P stays this rank's: with gradients averaged over the ranks, as
            data parallelism does, the gradient is that of the loss over all their tokens.

    Returns:
        fp32 scalar, 1 for a perfectly balanced router.
    """
    with torch.no_grad():
        pm = None if mask is None else mask.reshape(-1, 1).expand(indices.shape).bool()
        if pair_mask is not None:
            pm = pair_mask.bool() if pm is None else pm & pair_mask.bool()
        flat = indices.reshape(-1) if pm is None else indices.reshape(-1)[pm.reshape(-1)]
        counts = torch.bincount(flat, minlength=num_experts).float()  # (E,)
        if group is not None:
            torch.distributed.all_reduce(counts, group=group)
        f = counts / counts.sum().clamp_min(1.0)
    p_sum, n = _masked_sum(probs.float(), mask)
    return num_experts * (f * p_sum).sum() / n.clamp_min(1.0)


def z_loss(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2.

    Args:
        logits: (T, E) router logits.
        mask: (T,) True for tokens that count, or None.

    Returns:
        fp32 scalar.
    """
    lse = torch.logsumexp(logits.float(), dim=-1)  # (T,)
    total, n = _masked_sum(lse.square(), mask)
    return total / n.clamp_min(1.0)
