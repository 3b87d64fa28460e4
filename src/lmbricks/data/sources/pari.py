"""Maths: the TeX sources of the PARI/GP manuals and tutorials, Debian ``pari-doc`` (GPL-2+).

Documents are sections of the manuals: a new document starts at a ``\\section`` or, once the
current one holds a few kilobytes, at a ``\\subsec`` (the function reference has over a thousand).
Macro files carry no text and are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from lmbricks.data.document import Document

PACKAGE = "pari-doc"
#: The Debian version the corpus figures were measured on (tried first; see data.download.choose_deb_version).
VERSION = "2.15.2-1"
_DOC = Path("usr/share/pari/doc")
_SKIP = frozenset({"parimacro.tex", "pdfmacs.tex", "paricfg.tex", "users.tex"})
_SECTION = re.compile(r"^\\(chapter|section)\b")
_SUBSEC = re.compile(r"^\\(subsec|subsubsec|subsection)\b")
_MIN_BYTES = 4000


def sections(tex: str) -> list[str]:
    """Cut a TeX file into sections (see the module docstring)."""
    docs: list[list[str]] = [[]]
    size = 0
    for line in tex.splitlines():
        if docs[-1] and (_SECTION.match(line) or (_SUBSEC.match(line) and size >= _MIN_BYTES)):
            docs.append([])
            size = 0
        docs[-1].append(line)
        size += len(line) + 1
    return ["\n".join(d).strip() for d in docs if "\n".join(d).strip()]


def read(root: Path) -> Iterator[Document]:
    """One document per section of each TeX file, ordered by file."""
    for path in sorted((root / _DOC).glob("*.tex")):
        if path.name in _SKIP:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for i, sec in enumerate(sections(text)):
            yield Document(id=f"{PACKAGE}:{path.name}:{i:04d}", text=sec, source=PACKAGE)
