"""Perplexity and bits per byte of a causal LM on a text.

Every token of the text is scored: the text is tokenised once, cut into windows of ``seq_len - 1``
tokens, and each window is prefixed with the document-start token so its first token is predicted
too. Bits per byte divide the summed negative log-likelihood (in bits) by the UTF-8 bytes of the
scored text, which makes models with different tokenizers comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lmbricks.errors import ConfigError


@dataclass(frozen=True)
class PplResult:
    """Scores of one text: summed NLL in nats, tokens and bytes scored, and the derived metrics."""

    nll: float
    tokens: int
    bytes: int

    @property
    def ppl(self) -> float:
        """Per-token perplexity, exp(mean NLL)."""
        return math.exp(self.nll / max(self.tokens, 1))

    @property
    def bpb(self) -> float:
        """Bits per UTF-8 byte."""
        return self.nll / math.log(2) / max(self.bytes, 1)

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "ppl": self.ppl, "bpb": self.bpb}


def _start_token(tokenizer: Any) -> int:
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


@torch.no_grad()
def score_tokens(
    model: Any,
    ids: torch.Tensor,
    start_id: int,
    seq_len: int = 1024,
    batch_size: int = 4,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Per-token negative log-likelihood of ``ids`` under ``model``.

    Args:
        model: a causal LM whose ``model(input_ids).logits`` (or plain tensor output) is (B, T, V).
        ids: (N,) token ids of the text.
        start_id: token prepended to every window (document start).
        seq_len: window length including the start token.
        batch_size: windows per forward pass.
        on_batch: called with the number of tokens scored after each batch (progress).

    Returns:
        (N,) float32 NLL in nats, one per token of ``ids``.
    """
    step = seq_len - 1
    windows = [ids[i : i + step] for i in range(0, ids.numel(), step)]
    out = torch.empty(ids.numel(), dtype=torch.float32)
    pos = 0
    for b in range(0, len(windows), batch_size):
        group = windows[b : b + batch_size]
        width = max(w.numel() for w in group)
        # Shorter windows are padded on the right: under causal attention padding after a token
        # cannot change its logits, so no attention mask is needed (any causal LM works).
        batch = torch.full((len(group), width + 1), start_id, dtype=torch.long)
        for row, w in enumerate(group):
            batch[row, 1 : w.numel() + 1] = w
        result = model(batch)
        logits = result.logits if hasattr(result, "logits") else result  # (B, T+1, V)
        for row, w in enumerate(group):
            # One row at a time, padding left out: no (B, T, V) float32 log-softmax beside the logits
            # (a 152k vocabulary made that 2.5 GB at 4 x 1024 tokens). NLL = logsumexp(x) - x[target].
            x = logits[row, : w.numel()].float()  # (n, V): predicts tokens 1..n
            target = batch[row, 1 : w.numel() + 1, None]  # (n, 1)
            out[pos : pos + w.numel()] = torch.logsumexp(x, dim=-1) - x.gather(-1, target).squeeze(-1)
            pos += w.numel()
        if on_batch is not None:
            on_batch(sum(w.numel() for w in group))
    return out


def evaluate_text(
    model: Any,
    tokenizer: Any,
    text: str,
    max_tokens: int | None = None,
    seq_len: int = 1024,
    batch_size: int = 4,
    on_batch: Callable[[int], None] | None = None,
) -> PplResult:
    """Perplexity and bits per byte of ``model`` on ``text`` (optionally its first ``max_tokens`` tokens).

    Raises:
        ConfigError: the text (or its first ``max_tokens``) holds no token: there is nothing to score.
    """
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    n_bytes = len(text.encode("utf-8"))
    if max_tokens is not None and ids.numel() > max_tokens:
        ids = ids[:max_tokens]
        # Byte-level BPE decodes exactly, so the scored bytes are those of the decoded prefix.
        n_bytes = len(tokenizer.decode(ids.tolist()).encode("utf-8"))
    if ids.numel() == 0:  # a perplexity of 1 and 0 bits per byte would look like a perfect model
        raise ConfigError("nothing to score: the text is empty" + (" (max_tokens is 0)" if max_tokens == 0 else ""))
    nll = score_tokens(model, ids, _start_token(tokenizer), seq_len, batch_size, on_batch)
    return PplResult(nll=float(nll.double().sum()), tokens=int(ids.numel()), bytes=n_bytes)


def perplexity(model: Any, tokenizer: Any, texts: list[str] | str, max_tokens: int | None = None) -> float:
    """Per-token perplexity of ``model`` on one text or documents joined by blank lines."""
    text = texts if isinstance(texts, str) else "\n\n".join(texts)
    return evaluate_text(model, tokenizer, text, max_tokens=max_tokens).ppl
