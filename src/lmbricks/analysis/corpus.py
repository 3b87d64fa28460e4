"""Fixed token budgets per domain, and the mean NLL of a model on them.

Analyses run many forward passes under different interventions, so they score the same small set
of token blocks every time (``n_chunks`` blocks of ``seq_len`` tokens per domain, cut from the
start of the domain's split by :func:`lmbricks.data.token_chunks`) rather than whole texts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lmbricks.errors import ConfigError

#: Token budgets: quick (CLI --quick, docs smoke runs) and full (the figures quoted in docs).
QUICK_BUDGET = (4, 256)
FULL_BUDGET = (4, 1024)


def domain_chunks(
    tokenizer: Any,
    domains: Sequence[str],
    split: str = "test",
    n_chunks: int = 4,
    seq_len: int = 256,
    texts_of: Callable[[str, str], list[str]] | None = None,
) -> dict[str, torch.Tensor]:
    """``n_chunks`` blocks of ``seq_len`` tokens from the start of each domain's split.

    Args:
        tokenizer: the model's tokenizer.
        domains: corpus domain names.
        split: ``train`` for calibration, ``test`` for evaluation.
        n_chunks: blocks per domain.
        seq_len: tokens per block.
        texts_of: ``(domain, split) -> documents``; defaults to :func:`lmbricks.data.load_texts`.

    Returns:
        ``{domain: LongTensor (n, seq_len)}``, n <= n_chunks.

    Raises:
        ConfigError: a domain yields no complete block.
    """
    if n_chunks < 1 or seq_len < 2:
        raise ConfigError(f"need n_chunks >= 1 and seq_len >= 2, got {n_chunks} x {seq_len}")
    if texts_of is None:
        from lmbricks.data import load_texts

        texts_of = load_texts
    from lmbricks.data import token_chunks

    out: dict[str, torch.Tensor] = {}
    for domain in domains:
        chunks = token_chunks(tokenizer, texts_of(domain, split), seq_len, n_chunks * seq_len)
        if chunks.shape[0] == 0:
            raise ConfigError(f"domain {domain!r} ({split}) has fewer than {seq_len} tokens")
        out[domain] = chunks
    return out


@torch.no_grad()
def mean_nll(model: Any, chunks: torch.Tensor, batch_size: int = 2) -> float:
    """Mean next-token NLL (nats) of ``model`` over the blocks ``chunks`` (N, T): N*(T-1) predictions."""
    total, count = 0.0, 0
    for start in range(0, chunks.shape[0], batch_size):
        ids = chunks[start : start + batch_size]
        out = model(input_ids=ids)
        logits = out.logits if hasattr(out, "logits") else out  # (B, T, V)
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(nll)
        count += ids[:, 1:].numel()
    return total / max(count, 1)


def perplexities(model: Any, chunks: Mapping[str, torch.Tensor], batch_size: int = 2) -> dict[str, float]:
    """``{domain: perplexity}`` of ``model`` on each domain's blocks."""
    return {d: math.exp(mean_nll(model, c, batch_size)) for d, c in chunks.items()}


def relative_change(values: Mapping[str, float], base: Mapping[str, float]) -> dict[str, float]:
    """``{k: values[k] / base[k] - 1}`` (0.10 = +10%)."""
    return {k: values[k] / base[k] - 1.0 for k in values}


def budget(quick: bool, n_chunks: int | None = None, seq_len: int | None = None) -> tuple[int, int]:
    """``(blocks per domain, tokens per block)``: :data:`QUICK_BUDGET` or :data:`FULL_BUDGET`, each overridable."""
    base = QUICK_BUDGET if quick else FULL_BUDGET
    return n_chunks or base[0], seq_len or base[1]
