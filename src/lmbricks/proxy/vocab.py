"""Vocabulary check before proxy-tuning: the models must share the base's vocabulary id for id.

Proxy-tuning adds logits position by position, so token ``i`` must mean the same string in every
model. An expert whose vocabulary extends the base's with extra trailing tokens is accepted (its
logits are cut to the base's vocabulary); anything else is an error naming the first differing token.
"""

from __future__ import annotations

from typing import Any

from lmbricks.errors import ConfigError


def token_list(tokenizer: Any) -> list[str]:
    """Token strings by id, ``len(tokenizer)`` long (ids with no token read ``None``)."""
    vocab = tokenizer.get_vocab()  # token -> id, added tokens included
    tokens: list[str | None] = [None] * len(tokenizer)
    for tok, i in vocab.items():
        if 0 <= i < len(tokens):
            tokens[i] = tok
    return tokens  # type: ignore[return-value]


def check_shared_vocab(base: list[str], other: list[str], role: str) -> int:
    """Check that ``other`` has the base's tokens at the same ids.

    Args:
        base: the base model's token strings by id.
        other: the expert's or anti-expert's token strings by id.
        role: ``expert`` or ``anti-expert`` (named in errors).

    Returns:
        The shared vocabulary size, ``len(base)``.

    Raises:
        ConfigError: a token differs (the first one is named) or ``other`` lacks some of the base's tokens.
    """
    for i, (a, b) in enumerate(zip(base, other, strict=False)):
        if a != b:
            raise ConfigError(
                f"vocabularies differ: token id {i} is {a!r} in the base but {b!r} in the {role}; "
                "proxy-tuning needs the same vocabulary"
            )
    if len(other) < len(base):
        raise ConfigError(
            f"the {role}'s vocabulary has {len(other)} tokens, the base's {len(base)}: the {role} lacks "
            f"token id {len(other)} ({base[len(other)]!r})"
        )
    return len(base)


def shared_vocab_size(base_tok: Any, others: dict[str, Any], logits_dims: dict[str, int]) -> int:
    """The number of logits combined: the base tokenizer's size, checked against every model.

    Args:
        base_tok: the base tokenizer.
        others: ``{role: tokenizer}`` of the expert and anti-expert.
        logits_dims: ``{role: output vocabulary size}`` of every model, ``base`` included.

    Raises:
        ConfigError: a vocabulary mismatch, or a model whose output layer is smaller than the vocabulary.
    """
    base = token_list(base_tok)
    for role, tok in others.items():
        if tok is not base_tok:
            check_shared_vocab(base, token_list(tok), role)
    for role, dim in logits_dims.items():
        if dim < len(base):
            raise ConfigError(f"the {role} outputs {dim} logits, fewer than the {len(base)} tokens of the vocabulary")
    return len(base)
