"""Maths problems with worked solutions: PyPI ``champ-dataset`` (CHAMP, MIT licence).

The wheel carries ``champ_dataset/dataset_files/v0.json``; it is read straight from the archive,
nothing is installed. One document per problem: statement, solution steps and answer.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmbricks.data.document import Document
from lmbricks.errors import FetchError

PACKAGE = "champ-dataset"
VERSION = "1.0.0"
_MEMBER = "champ_dataset/dataset_files/v0.json"


def _load(archive: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(archive) as zf:
            data: dict[str, Any] = json.loads(zf.read(_MEMBER))
    except (KeyError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{archive} lacks {_MEMBER} ({exc}); delete it and fetch again") from exc
    return data


def render(problem: dict[str, Any]) -> str:
    """A problem as text: ``Problem: ...``, ``Solution: ...`` (steps), ``Answer: ...`` when given."""
    steps = " ".join(s["_text"].strip() for s in problem.get("solution", {}).get("steps", []))
    parts = [f"Problem: {problem['_text'].strip()}", f"Solution: {steps}"]
    answer = (problem.get("_answer") or "").strip()
    if answer:
        parts.append(f"Answer: {answer}")
    return "\n\n".join(parts)


def read(archive: Path) -> Iterator[Document]:
    """One document per problem, ordered by identifier."""
    problems = _load(archive)["problems"]
    for ident in sorted(problems):
        yield Document(id=f"{PACKAGE}:{ident}", text=render(problems[ident]), source=PACKAGE)
