"""English prose: Jane Austen's six novels from Debian ``r-cran-janeaustenr``.

The R package keeps each novel as a character vector (one element per printed line) in a lazy-load
database (``data/Rdata.rdx`` index + ``data/Rdata.rdb`` zlib blobs); each blob is an ordinary R
serialisation that the ``rdata`` package parses. Documents are chapters.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

from lmbricks.data.document import Document
from lmbricks.errors import FetchError

PACKAGE = "r-cran-janeaustenr"
#: The Debian version the corpus figures were measured on (tried first; see data.download.choose_deb_version).
VERSION = "1.0.0-1"
_DATA = Path("usr/lib/R/site-library/janeaustenr/data")
_CHAPTER = re.compile(r"^\s*(CHAPTER|Chapter)\s+([IVXLC]+|\d+)\b")


def read_novels(root: Path) -> dict[str, list[str]]:
    """The novels of the extracted package: name -> list of printed lines."""
    import rdata

    folder = root / _DATA
    rdx, rdb = folder / "Rdata.rdx", folder / "Rdata.rdb"
    if not rdx.is_file() or not rdb.is_file():
        raise FetchError(f"{folder} lacks Rdata.rdx/Rdata.rdb; is {PACKAGE} intact? fetch again with --force")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that a bare serialisation is "assumed RDS"
        index = rdata.read_rds(rdx)
        blob = rdb.read_bytes()
        novels: dict[str, list[str]] = {}
        for name, (offset, length) in index["variables"].items():
            # Each entry: 4-byte big-endian uncompressed length, then a zlib stream.
            raw = zlib.decompress(blob[int(offset) + 4 : int(offset) + int(length)])
            lines = rdata.conversion.convert(rdata.parser.parse_data(raw))
            novels[str(name)] = ["" if x is None else str(x) for x in lines]
    return novels


def _paragraphs(lines: list[str]) -> str:
    paras, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(paras)


def chapters(lines: list[str]) -> list[str]:
    """Split a novel's lines into chapters (the front matter goes with the first chapter)."""
    starts = [i for i, line in enumerate(lines) if _CHAPTER.match(line)]
    if not starts:
        return [_paragraphs(lines)]
    bounds = [0, *starts[1:], len(lines)]
    return [_paragraphs(lines[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def read(root: Path) -> Iterator[Document]:
    """One document per chapter of each novel."""
    for novel, lines in sorted(read_novels(root).items()):
        for i, text in enumerate(chapters(lines)):
            if text.strip():
                yield Document(id=f"{PACKAGE}:{novel}:{i:03d}", text=text, source=PACKAGE)
