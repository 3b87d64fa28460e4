"""The Debian Administrator's Handbook (Debian ``debian-handbook``; GPL-2+ or CC-BY-SA-3.0).

The package ships the same 127 HTML pages in 26 languages. Two readers use it:

- :func:`read_zh`: the Chinese (zh-CN) pages, keeping paragraphs that are mostly CJK text (pages
  only partly translated keep English paragraphs, which are dropped).
- :func:`read_parallel`: pages in :data:`LANGUAGES`, keyed so they align across languages. A page
  is one document per language with ``group`` = the page, so every language version of a page
  lands in the same split. When a page has as many paragraphs as its English version, paragraph
  ``i`` is keyed ``page#i`` in every language (``paragraph_keys``); paragraphs left untranslated
  (equal to the English text) and ``<pre>`` listings are dropped outside English.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lmbricks.data.document import Document
from lmbricks.data.html import Block, cjk_share, html_blocks

PACKAGE = "debian-handbook"
#: The Debian version the corpus figures were measured on (tried first; see data.download.choose_deb_version).
VERSION = "11.20220922"
_HTML = Path("usr/share/doc/debian-handbook/html")
PIVOT = "en-US"
# Languages translated for the most part (under half of the paragraphs left in English in 11.20220922).
LANGUAGES: tuple[str, ...] = (
    "en-US", "de-DE", "fr-FR", "es-ES", "it-IT", "pt-BR", "ca-ES", "nb-NO", "id-ID",
    "ja-JP", "zh-CN", "ru-RU", "ar-MA", "fa-IR",
)  # fmt: skip
MIN_CJK = 0.3


def short_code(locale: str) -> str:
    """Sub-domain name of a handbook locale: ``de-DE`` -> ``de``."""
    return locale.split("-")[0].lower()


def pages(root: Path, locale: str) -> list[Path]:
    """The HTML pages of one language, sorted by name."""
    return sorted((root / _HTML / locale).glob("*.html"))


def _text_blocks(path: Path) -> list[Block]:
    return [b for b in html_blocks(path.read_text(encoding="utf-8")) if b.tag != "pre"]


def read_zh(root: Path) -> Iterator[Document]:
    """One document per zh-CN page: its paragraphs that are at least :data:`MIN_CJK` CJK."""
    for path in pages(root, "zh-CN"):
        paras = [b.text for b in _text_blocks(path) if cjk_share(b.text) >= MIN_CJK]
        if paras:
            yield Document(id=f"{PACKAGE}:zh-CN/{path.name}", text="\n\n".join(paras), source=PACKAGE)


def read_parallel(root: Path, languages: tuple[str, ...] = LANGUAGES) -> Iterator[Document]:
    """Pages of every language in ``languages``; ``meta`` holds ``lang``, ``key`` and ``paragraph_keys``."""
    for en_path in pages(root, PIVOT):
        page = en_path.name
        en = [b.text for b in _text_blocks(en_path)]
        en_set = set(en)
        for locale in languages:
            path = root / _HTML / locale / page
            if not path.is_file():
                continue
            blocks = en if locale == PIVOT else [b.text for b in _text_blocks(path)]
            aligned = len(blocks) == len(en)
            kept: list[str] = []
            keys: list[str | None] = []
            for i, text in enumerate(blocks):
                untranslated = text == en[i] if aligned else text in en_set
                if locale != PIVOT and untranslated:
                    continue
                kept.append(text)
                keys.append(f"{page}#{i}" if aligned else None)
            if kept:
                yield Document(
                    id=f"{PACKAGE}:{locale}/{page}",
                    text="\n\n".join(kept),
                    source=PACKAGE,
                    group=f"{PACKAGE}:{page}",
                    meta={"lang": short_code(locale), "locale": locale, "key": page, "paragraph_keys": keys},
                )
