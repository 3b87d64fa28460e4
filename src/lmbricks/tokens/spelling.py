"""Token strings as the bytes they stand for, so two tokenizers' vocabularies can be matched.

Tokenizers spell the same text differently in their vocabularies:

* **byte-level BPE** (GPT-2, Llama 3, Qwen2.5, SmolLM2): every byte is one printable character of
  GPT-2's byte-to-unicode table, so a space is ``Ġ`` and ``é`` is ``Ã©``;
* **SentencePiece-style** (Gemma, Llama 2, Mistral): a space is ``▁`` and a byte the model has no
  piece for is a byte-fallback token ``<0xE4>``;
* anything else (WordPiece, plain word lists): the string is the text.

:func:`token_key` turns one vocabulary entry into a key: ``(special, bytes)``. Two tokenizers
share a token when their keys are equal: ``Ġthe`` (byte-level) and ``▁the`` (SentencePiece) both
become ``(False, b" the")``; special tokens (``<|im_end|>``) match only special tokens with the same
content. Everything here is pure: vocabularies in, keys and index maps out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Literal

import torch

Scheme = Literal["bytelevel", "sentencepiece", "plain"]
#: One vocabulary entry's key: (is a special token, the bytes it stands for).
Key = tuple[bool, bytes]

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPACE_PIECE = "\u2581"  # ▁


@cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode table (printable bytes stand for themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shift)] = b
            shift += 1
    return table


def _types(node: Any) -> list[str]:
    """The ``type`` of a tokenizer.json component and of every component nested in a Sequence."""
    if not isinstance(node, Mapping):
        return []
    found = [str(node.get("type"))]
    for child in node.get("decoders", []) or node.get("pretokenizers", []) or []:
        found += _types(child)
    if node.get("type") == "Replace" and node.get("pattern", {}).get("String") == _SPACE_PIECE:
        found.append("Metaspace")
    return found


def detect_scheme(tokenizer_json: Mapping[str, Any]) -> Scheme:
    """How a tokenizer spells bytes in its vocabulary, read from its ``tokenizer.json``.

    Args:
        tokenizer_json: the parsed ``tokenizer.json`` (``decoder``, ``pre_tokenizer``, ``model``).

    Returns:
        ``bytelevel`` when the decoder or pre-tokenizer is ``ByteLevel``; ``sentencepiece`` when it
        uses ``Metaspace``, replaces ``▁`` or falls back to bytes; else ``plain``.
    """
    kinds = _types(tokenizer_json.get("decoder")) + _types(tokenizer_json.get("pre_tokenizer"))
    if "ByteLevel" in kinds:
        return "bytelevel"
    model = tokenizer_json.get("model") or {}
    if "Metaspace" in kinds or "ByteFallback" in kinds or model.get("byte_fallback"):
        return "sentencepiece"
    return "plain"


def token_bytes(token: str, scheme: Scheme) -> bytes:
    """The bytes a (non-special) vocabulary entry stands for.

    Args:
        token: the entry as the vocabulary spells it (``Ġthe``, ``▁the``, ``<0x0A>``).
        scheme: from :func:`detect_scheme`.

    Returns:
        The UTF-8 bytes of its text (a byte-level entry may be a part of a character). A byte-level
        entry holding a character outside GPT-2's table is taken as its UTF-8 text.
    """
    if scheme == "bytelevel":
        table = _unicode_to_byte()
        if all(ch in table for ch in token):
            return bytes(table[ch] for ch in token)
        return token.encode("utf-8")
    if scheme == "sentencepiece":
        m = _BYTE_FALLBACK.match(token)
        if m:
            return bytes([int(m.group(1), 16)])
        return token.replace(_SPACE_PIECE, " ").encode("utf-8")
    return token.encode("utf-8")


def token_key(token: str, scheme: Scheme, special: bool) -> Key:
    """The matching key of one vocabulary entry: ``(special, bytes)``.

    Special tokens (added tokens flagged special: ``<|im_end|>``, ``<bos>``) are kept as their literal
    content, whatever the scheme, and match only other special tokens.
    """
    if special:
        return (True, token.encode("utf-8"))
    return (False, token_bytes(token, scheme))


def vocab_keys(vocab: Mapping[str, int], scheme: Scheme, specials: Iterable[str]) -> dict[int, Key]:
    """The key of every id of a vocabulary.

    Args:
        vocab: token string -> id (added tokens included, as ``get_vocab()`` gives it).
        scheme: the tokenizer's :func:`detect_scheme`.
        specials: the contents of its special added tokens.

    Returns:
        id -> key.
    """
    special = set(specials)
    return {i: token_key(t, scheme, t in special) for t, i in vocab.items()}


def match_ids(model_keys: Mapping[int, Key], donor_keys: Mapping[int, Key], rows: int) -> torch.Tensor:
    """For each donor id, the model id of the same token (-1: the model has no such token).

    Args:
        model_keys: the model's id -> key (ids at or beyond its embedding rows are ignored by the caller).
        donor_keys: the donor's id -> key.
        rows: the number of output rows (donor ids at or beyond it are ignored).

    Returns:
        ``(rows,)`` int64: the model row to copy into each output row, -1 where there is none. When
        the model spells one text twice (``<0x20>`` and ``▁``), its lowest id is used.
    """
    first: dict[Key, int] = {}
    for i in sorted(model_keys):
        first.setdefault(model_keys[i], i)
    index = torch.full((rows,), -1, dtype=torch.int64)
    for j, key in donor_keys.items():
        if 0 <= j < rows and key in first:
            index[j] = first[key]
    return index
