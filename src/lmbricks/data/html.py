"""HTML pages to paragraphs: the text of each block element, navigation and tables of contents dropped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

# Elements whose text forms one paragraph; any of them opening or closing ends the current one.
_BLOCKS = frozenset(
    {"p", "li", "dt", "dd", "pre", "td", "th", "blockquote", "caption", "h1", "h2", "h3", "h4", "h5", "h6"}
)
_BREAKS = _BLOCKS | frozenset({"div", "ul", "ol", "dl", "table", "tr", "br", "hr", "body"})
# Whole subtrees that are page furniture rather than content.
_SKIP_TAGS = frozenset({"head", "script", "style", "title"})
_SKIP_CLASSES = frozenset({"toc", "docnav", "navheader", "navfooter", "list-of-tables", "list-of-figures"})
_SKIP_IDS = frozenset({"banner", "title"})
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "wbr"})


@dataclass(frozen=True)
class Block:
    """One paragraph of a page: the block element it came from and its text (whitespace normalised)."""

    tag: str
    text: str


class _BlockParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._buf: list[str] = []
        self._tags: list[str] = []  # open block elements, innermost last
        self._skip_depth = 0  # > 0 while inside a skipped subtree
        self._stack: list[bool] = []  # per open element: did it start a skipped subtree?
        self._pre = 0

    def _flush(self) -> None:
        raw = "".join(self._buf)
        self._buf = []
        text = re.sub(r"\n\s*\n+", "\n", raw.strip("\n")).rstrip() if self._pre else " ".join(raw.split())
        if text.strip():
            tag = self._tags[-1] if self._tags else "p"
            self.blocks.append(Block(tag, text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br" and not self._skip_depth:
                self._buf.append("\n" if self._pre else " ")
            return
        classes = set((dict(attrs).get("class") or "").split())
        skip = tag in _SKIP_TAGS or bool(classes & _SKIP_CLASSES) or dict(attrs).get("id") in _SKIP_IDS
        self._stack.append(skip)
        if skip:
            self._skip_depth += 1
        if self._skip_depth:
            return
        if tag in _BREAKS:
            self._flush()
        if tag in _BLOCKS:
            self._tags.append(tag)
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not self._stack:
            return
        skip = self._stack.pop()
        if self._skip_depth and not (skip and self._skip_depth == 1):
            if skip:
                self._skip_depth -= 1
            return
        if skip:
            self._skip_depth -= 1
            return
        if tag in _BREAKS:
            self._flush()
        if tag in _BLOCKS and self._tags:
            self._tags.pop()
        if tag == "pre" and self._pre:
            self._pre -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._buf.append(data)


def html_blocks(html: str) -> list[Block]:
    """Split an HTML page into paragraphs.

    Args:
        html: the page source (XHTML as DocBook writes it, or ordinary HTML).

    Returns:
        The blocks in reading order; inline markup is flattened, whitespace collapsed (kept inside
        ``<pre>``), blank blocks and navigation (``toc``, ``docnav``, banner) dropped.
    """
    parser = _BlockParser()
    parser.feed(html)
    parser.close()
    parser._flush()
    return parser.blocks


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


def cjk_share(text: str) -> float:
    """Fraction of the non-space characters of ``text`` that are CJK ideographs or CJK punctuation."""
    chars = [c for c in text if not c.isspace()]
    return len(_CJK.findall(text)) / len(chars) if chars else 0.0
