"""Perplexity of a proxy-tuned ensemble: score a text under ``log_softmax(base + alpha (expert - anti))``.

Decoding shows what proxy-tuning generates; scoring held-out text measures how much of a small
model's tuning it transfers (the paper's "fraction of the gap closed"). Each member's logits over
the text are computed once (windows as in :mod:`lmbricks.eval.perplexity`: every window starts
with the document-start token so every token is predicted); any number of ``alpha`` values are then
combined from them without running the models again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmbricks.errors import ConfigError
from lmbricks.proxy.decode import Member, combine_logits
from lmbricks.proxy.vocab import shared_vocab_size


@torch.no_grad()
def text_logits(
    model: Any, ids: torch.Tensor, start_id: int, seq_len: int = 1024, vocab: int | None = None
) -> torch.Tensor:
    """Logits predicting each token of ``ids``: row ``i`` is the distribution of token ``i``.

    Args:
        model: a causal LM (``model(input_ids).logits``).
        ids: (N,) token ids.
        start_id: token prepended to every window.
        seq_len: window length including the start token.
        vocab: keep the first ``vocab`` logits (the shared vocabulary).

    Returns:
        (N, V) float32.
    """
    if ids.numel() == 0:
        raise ConfigError("no tokens to score")
    step = seq_len - 1
    rows = []
    for i in range(0, ids.numel(), step):
        window = ids[i : i + step]
        batch = torch.cat([torch.tensor([start_id], dtype=torch.long), window])[None]  # (1, T+1)
        logits = model(input_ids=batch).logits[0, :-1]  # (T, V): position t predicts window[t]
        rows.append(logits[:, :vocab].float())
    return torch.cat(rows)  # (N, V)


def proxy_nll(
    base: torch.Tensor, expert: torch.Tensor, anti: torch.Tensor, targets: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Per-token NLL (nats) of ``targets`` (N,) under the combined logits; all logits (N, V)."""
    logp = F.log_softmax(combine_logits(base, expert, anti, alpha), dim=-1)
    return -logp.gather(-1, targets[:, None]).squeeze(-1)  # (N,)


@dataclass(frozen=True)
class ProxyScores:
    """Perplexities on one text: each member alone and the ensemble per alpha."""

    tokens: int
    base: float
    expert: float
    anti: float
    proxy: dict[float, float]

    def gap_closed(self, alpha: float = 1.0) -> float:
        """How much of the base-to-expert perplexity gap the proxy closes: (base - proxy) / (base - expert).

        1 means the proxy is as good as the tuned small model, 0 no better than the base; NaN when
        the expert is no better than the base. (The paper's gap is to a tuned *large* model, which
        lmbricks does not have; here the expert's own perplexity is the reference.)
        """
        gap = self.base - self.expert
        return (self.base - self.proxy[alpha]) / gap if gap > 0 else math.nan


def proxy_perplexity(
    base: Member,
    expert: Member,
    anti: Member,
    text: str,
    alphas: Sequence[float] = (1.0,),
    seq_len: int = 1024,
    max_tokens: int | None = None,
) -> ProxyScores:
    """Perplexity of ``text`` under the base, the expert, the anti-expert and the proxy at each alpha.

    The text is tokenised with the base's tokenizer (the vocabularies are checked to be shared). A
    member that is the same model object as another is run once.

    Args:
        base, expert, anti: the three members (M1, M3, M2).
        text: the held-out text.
        alphas: the proxy strengths to score (alpha 0 is the base).
        seq_len: window length.
        max_tokens: score only the first ``max_tokens`` tokens.

    Returns:
        The :class:`ProxyScores`.
    """
    for a in alphas:
        if not math.isfinite(a):
            raise ConfigError(f"alpha must be a finite number, got {a}")
    members = {"base": base, "expert": expert, "anti-expert": anti}
    dims = {role: int(m.model.get_output_embeddings().weight.shape[0]) for role, m in members.items()}
    vocab = shared_vocab_size(base.tokenizer, {r: m.tokenizer for r, m in members.items() if r != "base"}, dims)
    tok = base.tokenizer
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)[:max_tokens]
    start = next((int(v) for v in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if v is not None), 0)
    logits: dict[int, torch.Tensor] = {}
    for m in members.values():
        if id(m.model) not in logits:
            logits[id(m.model)] = text_logits(m.model, ids, start, seq_len, vocab)
    lb, le, la = (logits[id(m.model)] for m in (base, expert, anti))

    def ppl(nll: torch.Tensor) -> float:
        return math.exp(float(nll.double().mean()))

    def alone(x: torch.Tensor) -> float:
        return ppl(-F.log_softmax(x, dim=-1).gather(-1, ids[:, None]).squeeze(-1))

    return ProxyScores(
        tokens=int(ids.numel()),
        base=alone(lb),
        expert=alone(le),
        anti=alone(la),
        proxy={float(a): ppl(proxy_nll(lb, le, la, ids, a)) for a in alphas},
    )
