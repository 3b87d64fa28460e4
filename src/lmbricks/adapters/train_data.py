"""A brick's training data: documents (or pieces of them) in a seeded order, packed into token blocks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from lmbricks.adapters.config import LoraTrainConfig
from lmbricks.errors import ConfigError


def cut_pieces(text: str, size: int) -> list[str]:
    """Cut ``text`` into consecutive pieces of at least ``size`` UTF-8 bytes, each ending at a line end.

    Joining the pieces gives ``text`` back; the last piece may be shorter. ``size`` 0 keeps the text whole.
    """
    if size <= 0 or len(text.encode("utf-8")) <= size:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        used += len(line.encode("utf-8"))
        if used >= size:
            pieces.append("".join(current))
            current, used = [], 0
    if current:
        pieces.append("".join(current))
    return pieces


def order_documents(
    records: Sequence[dict[str, Any]], seed: int, balance_sources: bool, piece_bytes: int = 0
) -> list[str]:
    """Shuffle documents with ``seed``; with ``balance_sources``, interleave the sources by bytes.

    Args:
        records: ``{"text", "source"?}`` dicts (the domain's JSONL records).
        seed: shuffling seed.
        balance_sources: mix the sources (each shuffled) so each contributes about the same bytes,
            instead of one global shuffle.
        piece_bytes: first cut every document into pieces of about this many bytes (see
            :func:`cut_pieces`), which are then shuffled like documents (0: whole documents).

    Returns:
        The document (or piece) texts in training order.
    """
    if piece_bytes > 0:
        records = [
            {"text": piece, "source": r.get("source", "")}
            for r in records
            for piece in cut_pieces(str(r["text"]), piece_bytes)
        ]
    rng = random.Random(seed)
    if not balance_sources:
        texts = [str(r["text"]) for r in records]
        rng.shuffle(texts)
        return texts
    groups: dict[str, list[str]] = {}
    for r in records:
        groups.setdefault(str(r.get("source", "")), []).append(str(r["text"]))
    for name in sorted(groups):
        rng.shuffle(groups[name])
    # Next document from the source with the fewest bytes so far: the sources share the tokens
    # evenly even when one has documents ten times longer than another.
    used = dict.fromkeys(groups, 0)
    pos = dict.fromkeys(groups, 0)
    out: list[str] = []
    while True:
        left = [n for n in sorted(groups) if pos[n] < len(groups[n])]
        if not left:
            return out
        name = min(left, key=lambda n: used[n])
        doc = groups[name][pos[name]]
        pos[name] += 1
        used[name] += len(doc.encode("utf-8"))
        out.append(doc)


def training_chunks(tokenizer: Any, texts: Sequence[str], cfg: LoraTrainConfig) -> torch.Tensor:
    """Pack documents (already in training order) into ``(N, seq_len)`` blocks, enough for the run.

    Raises:
        ConfigError: the texts give not even one block.
    """
    from lmbricks.data import token_chunks

    chunks = token_chunks(tokenizer, list(texts), cfg.seq_len, max_tokens=cfg.train_tokens)
    if chunks.shape[0] == 0:
        raise ConfigError(f"the training text gives no block of seq_len={cfg.seq_len} tokens")
    return chunks  # (N, seq_len)


def train_texts(domain: str | None, texts: Sequence[str] | None, cfg: LoraTrainConfig) -> list[str]:
    """The training documents in order: ``texts`` if given, else the domain's train split (ordered by ``cfg``)."""
    if texts is not None:
        if not texts:
            raise ConfigError("no training texts given")
        return order_documents([{"text": t} for t in texts], cfg.seed, False, cfg.piece_bytes)
    if domain is None:
        raise ConfigError("give a corpus domain or training texts")
    from lmbricks.data import load_records

    return order_documents(load_records(domain, "train"), cfg.seed, cfg.balance_sources, cfg.piece_bytes)
