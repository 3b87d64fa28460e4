"""A reward probe: a linear Bradley-Terry head on a frozen LM against the LM's own likelihood ranking.

The control that docs/reward-models.md names as missing for its CHAMP result: rank held-out
``dialogue`` preference pairs (in-topic vs off-topic reply) by a linear head trained on a few pairs'
last-token features, and by the mean log-likelihood the untrained LM gives the reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.reward.loss import bradley_terry_loss
from lmbricks.reward.model import RewardModel
from lmbricks.reward.pairs import load_pairs
from lmbricks.reward.train import precompute, render_pair_text


def _reply_loglik(logits: torch.Tensor, ids: torch.Tensor, first: int) -> float:
    """Mean log-probability of tokens ``ids[first:]`` under next-token ``logits`` (T, V)."""
    logp = torch.log_softmax(logits[first - 1 : -1].float(), dim=-1)  # (T - first, V) predicts ids[first:]
    return float(logp.gather(1, ids[first:, None]).mean())


def train_linear_head(chosen: torch.Tensor, rejected: torch.Tensor, steps: int = 200, lr: float = 1e-2) -> torch.Tensor:
    """A Bradley-Terry linear reward head on fixed features: (N, H) chosen / rejected -> weights (H,).

    Full-batch AdamW from zero (the score is ``features @ w``, no bias: it cancels in a pair).
    """
    w = torch.zeros(chosen.shape[1], requires_grad=True)
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = bradley_terry_loss(chosen @ w, rejected @ w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


def _encode_replies(tokenizer: Any, pairs: Sequence[Any]) -> tuple[list[torch.Tensor], list[int]]:
    """Token ids of each pair's chosen then rejected text, and the index of each reply's first token."""
    seqs, firsts = [], []  # chosen, rejected of each pair in turn
    for p in pairs:
        prompt = render_pair_text(tokenizer, p.prompt, "", "plain").rstrip()  # "User: ...\nAssistant:"
        for reply in (p.chosen, p.rejected):
            enc = tokenizer(render_pair_text(tokenizer, p.prompt, reply, "plain"), add_special_tokens=False,
                            return_offsets_mapping=True)  # fmt: skip
            seqs.append(torch.tensor(enc["input_ids"]))
            firsts.append(next(i for i, (a, _) in enumerate(enc["offset_mapping"]) if a >= len(prompt)))
    return seqs, firsts


def reward_probe(model: Any, tokenizer: Any, train_pairs: int, test_pairs: int) -> dict[str, Any]:
    """A linear reward head on the frozen LM's last-token features vs the LM's own log-likelihood ranking.

    Both rankers score the same held-out ``dialogue`` pairs (in-topic vs off-topic reply) from one
    forward pass per text; the model is not modified.

    Args:
        model: an ``lmbricks.nn.LM``.
        tokenizer: its tokenizer (with offsets).
        train_pairs: the first N ``builtin:dialogue`` training pairs train the head.
        test_pairs: the first N test pairs are ranked.

    Returns:
        ``{"pairs": {"train", "test"}, "probe": accuracy record, "lm_loglik": accuracy record,
        "train_loss_first_last": [loss at w = 0, final loss]}``; an accuracy record is
        ``{"correct", "n", "accuracy", "ci95"}``.
    """
    train = load_pairs("builtin:dialogue", "train", 0)[:train_pairs]
    test = load_pairs("builtin:dialogue", "test", 0)[:test_pairs]

    train_seqs, _ = _encode_replies(tokenizer, train)
    test_seqs, test_first = _encode_replies(tokenizer, test)
    trunk = RewardModel(model)  # only its trunk is used: every layer, no head
    with torch.no_grad():
        hidden = precompute(trunk, train_seqs + test_seqs, trunk.num_layers)  # (T_i, H) before the final norm
        last = torch.stack([model.norm(h[-1]) for h in hidden]).float()  # (N, H) last-token features
        loglik = [
            _reply_loglik(model.lm_head(model.norm(h)), s, first)
            for h, s, first in zip(hidden[len(train_seqs) :], test_seqs, test_first, strict=True)
        ]
    n_train = len(train_seqs)
    scale = last[:n_train].std(0).clamp_min(1e-6)  # (H,) per-feature scale of the training features
    feats = last / scale
    w = train_linear_head(feats[:n_train:2], feats[1:n_train:2])
    with torch.no_grad():
        loss_first = float(bradley_terry_loss(feats[:n_train:2] @ (0 * w), feats[1:n_train:2] @ (0 * w)))
        loss_last = float(bradley_terry_loss(feats[:n_train:2] @ w, feats[1:n_train:2] @ w))
        scores = (feats[n_train:] @ w).tolist()  # chosen, rejected interleaved

    def acc(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, Any]:
        k = sum(c > r for c, r in zip(chosen, rejected, strict=True))
        lo, hi = wilson_interval(k, len(chosen))
        return {"correct": k, "n": len(chosen), "accuracy": k / max(len(chosen), 1), "ci95": [lo, hi]}

    return {
        "pairs": {"train": len(train), "test": len(test)},
        "probe": acc(scores[0::2], scores[1::2]),
        "lm_loglik": acc(loglik[0::2], loglik[1::2]),
        "train_loss_first_last": [loss_first, loss_last],
    }
