"""One side of a transplant: a tokenizer read from a directory, with its keys and special tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.errors import ConfigError
from lmbricks.tokens.spelling import Key, Scheme, detect_scheme, vocab_keys

#: Files of which a tokenizer directory must hold at least one.
TOKENIZER_SOURCES = ("tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass
class TokenizerSide:
    """A tokenizer as a transplant sees it.

    Attributes:
        directory: where its files are.
        tokens: id -> token string (added tokens included).
        keys: id -> matching key (:func:`~lmbricks.tokens.spelling.token_key`).
        scheme: how its vocabulary spells bytes.
        size: one past the largest id.
        special: the token strings it names ``bos``, ``eos``, ``pad`` and ``unk`` (None: not set).
        chat_template: its chat template, if it has one.
    """

    directory: Path
    tokens: dict[int, str]
    keys: dict[int, Key]
    scheme: Scheme
    size: int
    special: dict[str, str | None]
    chat_template: str | None

    def id_of(self, token: str) -> int | None:
        """The id of a token string (the lowest when the string occurs twice), else None."""
        ids = [i for i, t in self.tokens.items() if t == token]
        return min(ids) if ids else None


def read_tokenizer(directory: str | Path, what: str) -> TokenizerSide:
    """Load the tokenizer in ``directory`` (a fast, ``tokenizers``-backed one).

    Args:
        directory: a directory with ``tokenizer.json`` (or ``tokenizer.model`` / ``vocab.json``).
        what: how messages name it (``the donor tokenizer``, ``the model``).

    Raises:
        ConfigError: the directory holds no tokenizer file, or transformers cannot load it, or it has
            no fast backend whose vocabulary can be read.
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{what}: {directory} is not a directory")
    if not any((directory / name).is_file() for name in TOKENIZER_SOURCES):
        raise ConfigError(f"{what}: {directory} holds no tokenizer (none of {', '.join(TOKENIZER_SOURCES)})")
    try:
        tok = AutoTokenizer.from_pretrained(str(directory))
        backend = json.loads(tok.backend_tokenizer.to_str())
    except Exception as exc:  # transformers and tokenizers raise many types
        raise ConfigError(f"{what}: cannot load the tokenizer in {directory}: {exc}") from None
    return side_of(tok, backend, directory)


def side_of(tok: Any, backend: dict[str, Any], directory: Path) -> TokenizerSide:
    """A :class:`TokenizerSide` from a loaded tokenizer and its parsed ``tokenizer.json``."""
    vocab: dict[str, int] = tok.get_vocab()
    specials = [a["content"] for a in backend.get("added_tokens", []) if a.get("special")]
    specials += [s for s in tok.all_special_tokens if s in vocab]
    scheme = detect_scheme(backend)
    special = {name: getattr(tok, f"{name}_token", None) for name in ("bos", "eos", "pad", "unk")}
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return TokenizerSide(
        directory=directory,
        tokens={i: t for t, i in vocab.items()},
        keys=vocab_keys(vocab, scheme, specials),
        scheme=scheme,
        size=max(vocab.values()) + 1 if vocab else 0,
        special={k: v if isinstance(v, str) else None for k, v in special.items()},
        chat_template=template,
    )
