"""Chinese: the Debian Reference in simplified Chinese, Debian ``debian-reference-zh-cn`` (GPL-2+).

The chapters are HTML; each section (``<h2>``) is one document of the paragraphs that are mostly
CJK text (command listings and untranslated English are dropped).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lmbricks.data.document import Document
from lmbricks.data.html import cjk_share, html_blocks

PACKAGE = "debian-reference-zh-cn"
#: The Debian version the corpus figures were measured on (tried first; see data.download.choose_deb_version).
VERSION = "2.100"
_DIR = Path("usr/share/debian-reference")
MIN_CJK = 0.3


def read(root: Path) -> Iterator[Document]:
    """One document per ``<h2>`` section of each chapter (``index`` is the table of contents: skipped)."""
    for path in sorted((root / _DIR).glob("*.zh-cn.html")):
        if path.name.startswith("index."):
            continue
        sections: list[list[str]] = [[]]
        for block in html_blocks(path.read_text(encoding="utf-8")):
            if block.tag in ("h1", "h2") and sections[-1]:
                sections.append([])
            if block.tag != "pre" and cjk_share(block.text) >= MIN_CJK:
                sections[-1].append(block.text)
        for i, paras in enumerate(sections):
            if paras:
                yield Document(id=f"{PACKAGE}:{path.name}:{i:03d}", text="\n\n".join(paras), source=PACKAGE)
