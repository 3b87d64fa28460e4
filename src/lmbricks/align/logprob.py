"""Log-probabilities of responses under a causal LM, the quantity DPO and policy gradients differentiate.

A sequence is ``prompt + response``; the response token at position t is predicted by the logits at
t - 1. Sequences are right-padded (causal attention: padding after a sequence cannot change it), and
only the response positions go through the output head, in chunks of rows
(:mod:`lmbricks.align.head_logprob`), so neither the (B, T, V) nor the (B, R, V) logits are held at
once or kept for the backward pass. With ``recompute``, each transformer block's activations are
recomputed in the backward pass rather than kept (``torch.utils.checkpoint``): the same gradients bit
for bit, about one more forward pass of compute, and a micro-batch's activations no longer held at
once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbricks.align.head_logprob import head_logprobs


class _Recomputed(nn.Module):
    """A block run under ``torch.utils.checkpoint``: its inner activations are recomputed when the
    backward pass needs them (same autocast state, same random state), so only its input is kept."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor, inputs: Any) -> Any:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.block, x, inputs, use_reentrant=False)


@contextmanager
def recomputed_blocks(model: Any) -> Iterator[None]:
    """Run ``model.layers`` as :class:`_Recomputed` blocks inside the ``with`` (put back on exit; a
    backward pass after the ``with`` still recomputes, the graph holds the blocks)."""
    layers = model.layers
    blocks = list(layers)
    for i, b in enumerate(blocks):
        layers[i] = _Recomputed(b)
    try:
        yield
    finally:
        for i, b in enumerate(blocks):
            layers[i] = b


def token_logprobs(
    model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], recompute: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-token log-probabilities of each response given its prompt.

    Args:
        model: an :class:`lmbricks.nn.LM` (gradients flow when enabled).
        prompts: B prompts' token ids (each at least one token).
        responses: B responses' token ids (each at least one token).
        recompute: recompute each block's activations in the backward pass (:func:`recomputed_blocks`);
            only when gradients are recorded.

    Returns:
        ``(logp, mask)``, both (B, R) with R the longest response: ``logp[i, j]`` is
        log p(response_i[j] | prompt_i, response_i[:j]) in fp32 (0 where ``mask`` is False).
    """
    from lmbricks.reward.model import pad_right

    device = next(model.parameters()).device
    seqs = [torch.tensor([*p, *r], dtype=torch.long) for p, r in zip(prompts, responses, strict=True)]
    ids, _ = pad_right(seqs)  # (B, T)
    ids = ids.to(device)
    plen = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
    rlen = torch.tensor([len(r) for r in responses], device=device)  # (B,)
    R = int(rlen.max())
    j = torch.arange(R, device=device)[None]  # (1, R)
    mask = j < rlen[:, None]  # (B, R)
    where = (plen[:, None] - 1 + j).clamp(max=ids.shape[1] - 1)  # (B, R) positions predicting response tokens
    targets = ids.gather(1, (where + 1).clamp(max=ids.shape[1] - 1)).masked_fill(~mask, 0)  # (B, R)
    if recompute and torch.is_grad_enabled():
        with recomputed_blocks(model):
            h, _ = model.hidden_states(ids)  # (B, T, H), after the final norm
    else:
        h, _ = model.hidden_states(ids)
    hs = h.gather(1, where[..., None].expand(-1, -1, h.shape[-1]))  # (B, R, H)
    head = model.lm_head
    if type(head) is not nn.Linear or head.bias is not None or head._forward_hooks or head._forward_pre_hooks:
        logits = head(hs).float()  # (B, R, V): a wrapped head runs as a module
        logp = -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(mask.shape)
    else:  # the (B, R, V) logits one chunk at a time, none kept for the backward
        logp = head_logprobs(hs.flatten(0, 1), head.weight, targets.flatten()).view(mask.shape)
    return logp * mask, mask


def sequence_logprobs(
    model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], recompute: bool = False
) -> Tensor:
    """log p(response | prompt) summed over the response tokens: (B,) fp32 (``recompute``: as
    :func:`token_logprobs`)."""
    logp, _ = token_logprobs(model, prompts, responses, recompute)
    return logp.sum(-1)
