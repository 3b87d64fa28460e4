"""Dialogue: the English conversations of PyPI ``chatterbot-corpus`` (BSD-3-Clause).

Each YAML file under ``chatterbot_corpus/data/english/`` lists conversations (lists of utterances);
they are rendered as alternating ``User:`` / ``Assistant:`` turns, one document per conversation.
The YAML is read from the wheel without installing it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from lmbricks.data.document import Document
from lmbricks.errors import FetchError

PACKAGE = "chatterbot-corpus"
VERSION = "1.3.3"
_PREFIX = "chatterbot_corpus/data/english/"


def render_turns(utterances: Sequence[Any]) -> str:
    """Alternate ``User:`` and ``Assistant:`` lines, starting with the user."""
    lines = []
    for i, text in enumerate(utterances):
        speaker = "User" if i % 2 == 0 else "Assistant"
        lines.append(f"{speaker}: {' '.join(str(text).split())}")
    return "\n".join(lines)


def read(archive: Path) -> Iterator[Document]:
    """One document per conversation with at least two turns, ordered by file and position."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{archive} is not a wheel ({exc}); delete it and fetch again") from exc
    with zf:
        names = sorted(n for n in zf.namelist() if n.startswith(_PREFIX) and n.endswith((".yml", ".yaml")))
        if not names:
            raise FetchError(f"{archive} has no {_PREFIX}*.yml; is it chatterbot-corpus?")
        for name in names:
            data = yaml.safe_load(zf.read(name)) or {}
            for i, conv in enumerate(data.get("conversations") or []):
                if isinstance(conv, list) and len(conv) >= 2:
                    rel = name[len(_PREFIX) :]
                    yield Document(id=f"{PACKAGE}:{rel}#{i}", text=render_turns(conv), source=PACKAGE)
