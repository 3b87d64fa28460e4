"""Perplexity and bits per byte per corpus domain, on the held-out split."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.errors import ConfigError
from lmbricks.eval.perplexity import PplResult, evaluate_text

DEFAULT_BYTES = 12_000


def held_out_texts(
    domains: Sequence[str],
    split: str = "test",
    max_bytes: int = DEFAULT_BYTES,
    max_tokens: int | None = None,
    text_of: Callable[[str, str, int], str] | None = None,
) -> dict[str, str]:
    """The text scored for each domain (the first ``max_bytes`` of its ``split``), checked to be there.

    Call it before loading a model: a missing, unknown or empty split fails here, naming it.

    Raises:
        ConfigError: ``max_bytes`` or ``max_tokens`` below 1, or a domain whose split holds no text
            (a small ``lmbricks data add`` domain can have an empty test split).
    """
    if max_bytes < 1:
        raise ConfigError(f"max_bytes (--bytes) must be at least 1, got {max_bytes}")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens (--tokens) must be at least 1, got {max_tokens}")
    if text_of is None:
        from lmbricks.data import domain_text

        text_of = domain_text
    texts = {}
    for domain in domains:
        text = text_of(domain, split, max_bytes)
        if not text.strip():
            raise ConfigError(
                f"domain {domain!r}: the {split} split is empty, so there is nothing to score (a perplexity of "
                "1 would look like a perfect model); score another split (--split validation) or add more "
                f"documents to the domain"
            )
        texts[domain] = text
    return texts


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
    texts: Mapping[str, str] | None = None,
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
        texts: the texts, from :func:`held_out_texts` (read here when not given).

    Returns:
        ``{domain: PplResult}`` in the order given.

    Raises:
        ConfigError: a domain's split is empty (see :func:`held_out_texts`).
    """
    if texts is None:
        texts = held_out_texts(domains, split, max_bytes, max_tokens, text_of)
    results: dict[str, PplResult] = {}
    for domain in domains:
        text = texts[domain]
        if on_domain is not None:
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            on_domain(domain, min(n, max_tokens) if max_tokens else n)
        results[domain] = evaluate_text(model, tokenizer, text, max_tokens=max_tokens, on_batch=on_batch)
    return results
