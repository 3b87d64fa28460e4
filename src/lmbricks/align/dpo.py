"""Direct Preference Optimisation (arXiv 2305.18290): the loss, the encoded pairs, the reference.

``loss = -mean log sigmoid(beta * ((log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))))``;
at the start the policy is the reference, every margin is 0 and the loss is log 2 (tested). The
reference is the initial policy; its log-probabilities of every pair are computed once before the
first step, so no second model is kept in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.reward.pairs import Pair


def dpo_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """The DPO loss of (B,) sequence log-probabilities and the implicit reward margins.

    Args:
        pc, pr: the policy's log p of the chosen and rejected responses.
        rc, rr: the reference's.
        beta: the KL strength.

    Returns:
        ``(loss (), margins (B,) detached)``; margin_i = beta * ((pc - rc) - (pr - rr)).
    """
    margin = beta * ((pc - rc) - (pr - rr))
    return F.softplus(-margin).mean(), margin.detach()


def check_pairs(pairs: Sequence[Pair]) -> None:
    """Refuse an empty set and pairs whose chosen and rejected responses are identical (naming the pair).

    Raises:
        ConfigError: the first offending pair.
    """
    if not pairs:
        raise ConfigError("no preference pairs")
    for i, p in enumerate(pairs):
        if p.chosen == p.rejected:
            raise ConfigError(f"{p.where or f'pair {i}'}: chosen and rejected are identical (DPO learns nothing)")


@dataclass
class EncodedPreferences:
    """Token ids per pair: the prompt (as the policy sees it) and both responses (EOS appended)."""

    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    skipped: int  # pairs over max_len


def encode_preferences(tok: Any, pairs: Sequence[Pair], chat: bool, max_len: int) -> EncodedPreferences:
    """Encode pairs for DPO; pairs longer than ``max_len`` tokens (prompt + longer response) are skipped.

    Raises:
        ConfigError: identical chosen and rejected, or no pair left.
    """
    from lmbricks.align.sample import encode_policy_prompts

    check_pairs(pairs)
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    prompts = encode_policy_prompts(tok, [p.prompt for p in pairs], chat)
    out = EncodedPreferences([], [], [], 0)
    for p, ids in zip(pairs, prompts, strict=True):
        c = tok(p.chosen, add_special_tokens=False)["input_ids"] + eos
        r = tok(p.rejected, add_special_tokens=False)["input_ids"] + eos
        if len(ids) + max(len(c), len(r)) > max_len:
            out.skipped += 1
            continue
        out.prompts.append(ids)
        out.chosen.append(c)
        out.rejected.append(r)
    if not out.prompts:
        raise ConfigError(f"every pair is longer than max_len = {max_len} tokens")
    return out


def pair_logprobs(
    model: Any, enc: EncodedPreferences, idx: Sequence[int], recompute: bool = False
) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) sequence log-probabilities (each (B,)) of pairs ``idx``, in one forward
    (``recompute``: each block's activations recomputed in the backward pass, the same gradients)."""
    from lmbricks.align.logprob import sequence_logprobs

    prompts = [enc.prompts[i] for i in idx]
    responses = [enc.chosen[i] for i in idx] + [enc.rejected[i] for i in idx]
    both = sequence_logprobs(model, prompts + prompts, responses, recompute)
    return both[: len(idx)], both[len(idx) :]


@torch.no_grad()
def reference_logprobs(model: Any, enc: EncodedPreferences, batch: int = 8) -> tuple[Tensor, Tensor]:
    """The reference's (chosen, rejected) log-probabilities of every pair, (N,) each."""
    cs, rs = [], []
    for b in range(0, len(enc.prompts), batch):
        c, r = pair_logprobs(model, enc, range(b, min(b + batch, len(enc.prompts))))
        cs.append(c)
        rs.append(r)
    return torch.cat(cs), torch.cat(rs)
