"""Token colouring: escaped, one span per token, legend per expert; pieces rebuild the text."""

from __future__ import annotations

import re

import pytest

from lmbricks.testing import build_tiny_tokenizer
from lmbricks.trace import coloured_tokens_html, expert_colour, token_pieces


def test_html_is_escaped_and_complete() -> None:
    pieces = ["<script>", "alert(1)", "</script>", ' & "q"']
    html = coloured_tokens_html(pieces, [0, 1, -1, 3], 4, caption="<b>cap</b>")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    spans = re.findall(r'<span class="tok" data-expert="(-?\d+)"', html)
    assert spans == ["0", "1", "-1", "3"]
    assert html.count(">expert ") == 4  # one legend entry per expert
    assert expert_colour(3, 4) in html and expert_colour(-1, 4) in html
    with pytest.raises(ValueError):
        coloured_tokens_html(["a"], [0, 1], 4)


def test_colours_are_distinct() -> None:
    for e in (4, 16, 64):
        assert len({expert_colour(i, e) for i in range(e)}) == e


def test_pieces_concatenate_to_the_text_including_multibyte_characters() -> None:
    tok = build_tiny_tokenizer(384)
    text = "def main(): return 1 你好，世界。Bonjour ☃ le monde."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
