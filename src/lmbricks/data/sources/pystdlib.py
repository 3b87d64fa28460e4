"""Code: the Python 3.11 standard library sources shipped in Debian ``libpython3.11-stdlib``.

The .deb's files, not the local interpreter's, so the corpus is the same on every machine. One
document per module file; the generated documentation dump ``pydoc_data/topics.py`` is prose,
not code, and is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lmbricks.data.document import Document

PACKAGE = "libpython3.11-stdlib"
#: The Debian version the corpus figures were measured on (tried first; see data.download.choose_deb_version).
VERSION = "3.11.2-6+deb12u9"
_ROOT = Path("usr/lib/python3.11")
_SKIP = ("pydoc_data/", "_sysconfigdata")


def read(root: Path) -> Iterator[Document]:
    """One document per ``.py`` file (symlinks skipped), ordered by path."""
    base = root / _ROOT
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).as_posix()
        if path.is_symlink() or not path.is_file() or rel.startswith(_SKIP):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield Document(id=f"{PACKAGE}:{rel}", text=text, source=PACKAGE)
