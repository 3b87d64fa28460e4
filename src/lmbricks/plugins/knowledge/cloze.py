"""Cloze items from held-out sentences of real documents, for the knowledge plug-ins' evaluation.

Each document's sentences are split: every ``held_every``-th sentence is held out, the rest is the
document's training part (what the plug-in is trained on and what the in-prompt baseline reads).
An item masks one content word (or number) of a held-out sentence, chosen so that

- the word occurs in the document's training part (the document supports the answer), and
- no 5-word window of the held-out sentence around the word occurs in the training part (the item
  is not a training sentence repeated verbatim, so copying a memorised line does not answer it).

The distractors are content words of the *other* documents' training parts that do not occur in
this document, so an item asks "which of these words does this document's content put here".
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z][A-Za-z\-]{4,}|\d{2,}")
_STOP = frozenset(  # fmt: skip
    {
        "about",
        "above",
        "after",
        "again",
        "against",
        "their",
        "there",
        "these",
        "those",
        "which",
        "while",
        "would",
        "could",
        "should",
        "where",
        "other",
        "being",
        "using",
        "under",
        "first",
        "since",
        "every",
        "before",
        "between",
        "because",
        "through",
        "during",
        "however",
        "within",
    }
)


@dataclass(frozen=True)
class ClozeItem:
    """One item: ``prefix + candidate + suffix`` for each candidate; ``answer`` indexes the right one."""

    document: str
    prefix: str
    suffix: str
    candidates: tuple[str, ...]
    answer: int

    def query(self) -> str:
        """The sentence with the word masked (what routing sees)."""
        return f"{self.prefix}___{self.suffix}"


def sentences(text: str) -> list[str]:
    """The non-empty sentences of ``text`` (split after ``.!?`` and at line ends), stripped, in order."""
    return [x.strip() for x in _SENT.split(text) if x.strip()]


def split_sentences(text: str, held_every: int) -> tuple[list[str], list[str]]:
    """``(train, held)`` sentences of ``text``: every ``held_every``-th sentence of 40+ characters is held out."""
    train: list[str] = []
    held: list[str] = []
    for i, s in enumerate(sentences(text)):
        (held if len(s) >= 40 and i % held_every == held_every - 1 else train).append(s)
    return train, held


def _vocab(text: str) -> set[str]:
    return {w for w in _WORD.findall(text) if w.lower() not in _STOP}


def _verbatim(sentence: str, start: int, end: int, train: str) -> bool:
    words = sentence[:start].split()[-2:] + [sentence[start:end]] + sentence[end:].split()[:2]
    return " ".join(words) in train


def build_items(
    documents: Mapping[str, str], held_every: int = 4, per_document: int = 8, choices: int = 4, seed: int = 0
) -> tuple[dict[str, str], list[ClozeItem]]:
    """Split ``documents`` and build cloze items from their held-out sentences.

    Args:
        documents: ``{name: text}`` (at least two, for distractors).
        held_every: one sentence in this many is held out.
        per_document: at most this many items per document (at most one per held-out sentence).
        choices: candidates per item (the answer and ``choices - 1`` distractors).
        seed: the choice of word and distractors.

    Returns:
        ``({name: training part}, items)``.
    """
    rng = random.Random(seed)
    parts = {n: split_sentences(t, held_every) for n, t in documents.items()}
    train = {n: " ".join(tr) for n, (tr, _) in parts.items()}
    vocab = {n: _vocab(t) for n, t in train.items()}
    items: list[ClozeItem] = []
    for name, (_, held) in parts.items():
        others = sorted(set().union(*(v for m, v in vocab.items() if m != name)) - vocab[name])
        made = 0
        for sentence in held:
            spots = [m for m in _WORD.finditer(sentence) if m.group() in vocab[name] and m.group().lower() not in _STOP]
            spots = [m for m in spots if not _verbatim(sentence, m.start(), m.end(), train[name])]
            if not spots or len(others) < choices - 1 or made >= per_document:
                continue
            m = rng.choice(spots)
            cands = [m.group(), *rng.sample(others, choices - 1)]
            rng.shuffle(cands)
            items.append(
                ClozeItem(name, sentence[: m.start()], sentence[m.end() :], tuple(cands), cands.index(m.group()))
            )
            made += 1
    return train, items
