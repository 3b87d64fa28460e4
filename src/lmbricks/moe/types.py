"""What routers and MoE layers return: plain dataclasses of tensors, never global state."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class RouterOutput:
    """One routing decision for T tokens over E experts, as T x k (token, slot) pairs.

    Token-choice routers fill k slots per token. Expert choice and dense gating use k = E slots
    (slot j is expert j) and mark the pairs that are really routed in ``mask``.

    Attributes:
        weights: (T, k) fp32 gate applied to each pair's expert output.
        indices: (T, k) long expert of each pair.
        logits: (T, E) fp32 router logits (after noise for the noisy router).
        probs: (T, E) fp32 routing probabilities used by the balancing losses.
        mask: (T, k) bool pairs that are routed, or None when all are.
        clean_logits: (T, E) logits before noise (noisy_topk only, for the load loss).
        noise_std: (T, E) noise standard deviation (noisy_topk only; None in eval).
    """

    weights: Tensor
    indices: Tensor
    logits: Tensor
    probs: Tensor
    mask: Tensor | None = None
    clean_logits: Tensor | None = None
    noise_std: Tensor | None = None

    @property
    def top_k(self) -> int:
        return int(self.indices.shape[-1])


@dataclass
class MoEAux:
    """Auxiliary outputs of one MoE layer call (the caller weights and sums the losses).

    Attributes:
        losses: scalar, unweighted losses over the non-padding tokens: "switch" (N * sum f_i P_i,
            1 when balanced), "importance" and "load" (CV^2, Shazeer et al.; "load" needs the noisy
            router's noise, so training mode), "z" (mean logsumexp^2). Empty in pure inference (eval
            mode under no_grad) unless ``MoELayer.always_losses`` is set.
        tokens_per_expert: (E,) long pairs computed by each expert (after capacity, padding excluded).
        dropped_fraction: scalar, fraction of routed pairs dropped by the capacity limit.
        router_logits: (T, E) router logits, T = all tokens of the call (flattened batch).
        indices: (T, k) expert of each pair (-1 where a pair is not routed: dropped, or not chosen).
        weights: (T, k) fp32 gate of each pair (0 where not routed).
    """

    losses: dict[str, Tensor]
    tokens_per_expert: Tensor
    dropped_fraction: Tensor
    router_logits: Tensor
    indices: Tensor
    weights: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)
