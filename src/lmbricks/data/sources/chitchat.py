"""Dialogue: human chit-chat from PyPI ``chitchat-dataset`` (BYU PCC lab, MIT licence).

The chatterbot corpus alone holds about 64k tokens, under the 100k that a domain needs, so the
dialogue domain adds a fixed part of this larger corpus of human conversations: the conversations
in order of their identifiers until :data:`MAX_BYTES` of text. The first speaker of each
conversation is rendered as ``User:``, the other as ``Assistant:``; consecutive messages of one
speaker form one turn.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmbricks.data.document import Document
from lmbricks.errors import FetchError

PACKAGE = "chitchat-dataset"
VERSION = "0.9.0"
MAX_BYTES = 1_000_000
_MEMBER = "chitchat_dataset/dataset.json"


def render(conversation: dict[str, Any]) -> str:
    """A conversation as ``User:`` / ``Assistant:`` lines (empty when it has fewer than two turns)."""
    lines: list[str] = []
    first: str | None = None
    for turn in conversation.get("messages", []):
        if not turn:
            continue
        sender = turn[0].get("sender")
        first = sender if first is None else first
        text = " ".join(" ".join(str(m.get("text", "")).split()) for m in turn).strip()
        if text:
            lines.append(f"{'User' if sender == first else 'Assistant'}: {text}")
    return "\n".join(lines) if len(lines) >= 2 else ""


def read(archive: Path) -> Iterator[Document]:
    """Conversations sorted by identifier, up to :data:`MAX_BYTES` bytes in all."""
    try:
        with zipfile.ZipFile(archive) as zf:
            data: dict[str, Any] = json.loads(zf.read(_MEMBER))
    except (KeyError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{archive} lacks {_MEMBER} ({exc}); delete it and fetch again") from exc
    total = 0
    for ident in sorted(data):
        text = render(data[ident])
        if not text:
            continue
        yield Document(id=f"{PACKAGE}:{ident}", text=text, source=PACKAGE)
        total += len(text.encode("utf-8"))
        if total >= MAX_BYTES:
            return
