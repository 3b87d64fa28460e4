"""Perplexity and bits per byte per corpus domain, on the held-out split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmbricks.eval.perplexity import PplResult, evaluate_text

DEFAULT_DOMAINS = ("en_prose", "code", "math", "zh", "dialogue")
DEFAULT_BYTES = 12_000


def evaluate_domains(
    model: Any,
    tokenizer: Any,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    max_bytes: int = DEFAULT_BYTES,
    max_tokens: int | None = None,
    split: str = "test",
    text_of: Callable[[str, str, int], str] | None = None,
    on_domain: Callable[[str, int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, PplResult]:
    """Score ``model`` on the first ``max_bytes`` of each domain's ``split``.

    Args:
        model: causal LM (transformers or lmbricks), in eval mode.
        tokenizer: its tokenizer.
        domains: corpus domain names (built-in or added with ``lmbricks data add``).
        max_bytes: bytes of held-out text per domain (a deterministic prefix of the split).
        max_tokens: optional further cap on scored tokens per domain.
        split: which split to score (``test`` by default; ``validation`` for model selection).
        text_of: ``(domain, split, max_bytes) -> text``; defaults to ``lmbricks.data.domain_text``.
        on_domain: called with ``(domain, n_tokens)`` before scoring each domain (progress).
        on_batch: called with the tokens scored after each forward pass (progress).

    Returns:
        ``{domain: PplResult}`` in the order given.
    """
    if text_of is None:
        from lmbricks.data import domain_text

        text_of = domain_text
    results: dict[str, PplResult] = {}
    for domain in domains:
        text = text_of(domain, split, max_bytes)
        if on_domain is not None:
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            on_domain(domain, min(n, max_tokens) if max_tokens else n)
        results[domain] = evaluate_text(model, tokenizer, text, max_tokens=max_tokens, on_batch=on_batch)
    return results
