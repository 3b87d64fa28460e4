"""Tokenising corpora: token counts for manifests, and packing into fixed-length blocks for training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lmbricks.errors import ConfigError

if TYPE_CHECKING:
    import torch

_BATCH = 256  # documents per tokenizer call: fast tokenizers parallelise within a batch


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), _BATCH):
        batch = list(texts[start : start + _BATCH])
        out.extend(tokenizer(batch, add_special_tokens=False)["input_ids"])
    return out


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> int:
    """Number of tokens in ``texts``, each tokenised on its own without special tokens.

    Args:
        tokenizer: a Hugging Face tokenizer (anything callable as ``tokenizer(list_of_str)``
            returning ``{"input_ids": [[int, ...], ...]}``).
        texts: the documents.

    Returns:
        The total token count.
    """
    return sum(len(ids) for ids in _encode(tokenizer, texts))


def token_chunks(tokenizer: Any, texts: Sequence[str], seq_len: int, max_tokens: int | None = None) -> torch.Tensor:
    """Tokenise documents, join them with EOS and cut the stream into fixed-length blocks.

    Each document is followed by the tokenizer's EOS token; the stream stops after ``max_tokens``
    tokens and the incomplete last block is dropped.

    Args:
        tokenizer: a Hugging Face tokenizer with an ``eos_token_id``.
        texts: the documents, in order.
        seq_len: tokens per block.
        max_tokens: stop after this many tokens of the stream (``None``: all).

    Returns:
        A ``torch.long`` tensor of shape ``(N, seq_len)``, ``N = min(total, max_tokens) // seq_len``
        (possibly 0).

    Raises:
        ConfigError: ``seq_len`` < 1, or the tokenizer has no EOS token.
    """
    import torch

    if seq_len < 1:
        raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ConfigError("the tokenizer has no eos_token_id; documents cannot be joined")
    limit = max_tokens if max_tokens is not None else None
    stream: list[int] = []
    for start in range(0, len(texts), _BATCH):
        for ids in _encode(tokenizer, texts[start : start + _BATCH]):
            stream.extend(ids)
            stream.append(int(eos))
        if limit is not None and len(stream) >= limit:
            break
    if limit is not None:
        stream = stream[:limit]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (N, seq_len)
