"""Token colouring: an HTML view of a text where each token is coloured by its first-choice expert."""

from __future__ import annotations

import colorsys
import html
from collections.abc import Sequence
from typing import Any

# tab10 then tab20's light shades: distinct for the usual 4-16 experts
_PALETTE = [
    "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
    "#ccb974", "#64b5cd", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
]  # fmt: skip
_UNROUTED = "#e0e0e0"


def expert_colour(expert: int, num_experts: int) -> str:
    """A background colour for ``expert`` (grey for -1, not routed); evenly spaced hues beyond 16 experts."""
    if expert < 0:
        return _UNROUTED
    if num_experts <= len(_PALETTE):
        return _PALETTE[expert]
    r, g, b = colorsys.hls_to_rgb(expert / num_experts, 0.62, 0.55)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token adds, from decoding growing prefixes.

    Multi-byte characters land on the token that completes them.

    Args:
        tokenizer: a Hugging Face tokenizer.
        ids: token ids of one text.

    Returns:
        One string per token; their concatenation is ``tokenizer.decode(ids)`` when decoding is
        prefix-stable (byte-level BPE).
    """
    pieces: list[str] = []
    committed = ""
    for i in range(len(ids)):
        text = tokenizer.decode(list(ids[: i + 1]))
        if i < len(ids) - 1:
            # an incomplete UTF-8 character decodes as U+FFFD: it waits for the token that completes it
            text = text.rstrip("\ufffd")
        # where decoding is not prefix-stable (e.g. a cleaned-up space), fall back to the token alone
        stable = text.startswith(committed)
        piece = text[len(committed) :] if stable else tokenizer.decode([int(ids[i])])
        pieces.append(piece)
        committed += piece
    return pieces


def coloured_tokens_html(
    pieces: Sequence[str],
    experts: Sequence[int],
    num_experts: int,
    details: Sequence[str] | None = None,
    caption: str = "",
) -> str:
    """A self-contained HTML fragment: one ``<span>`` per token coloured by first-choice expert, and a legend.

    Args:
        pieces: the text of each token (escaped here; whitespace kept).
        experts: first-choice expert of each token (-1 = not routed, grey).
        num_experts: E, for the palette and the legend.
        details: optional tooltip per token (e.g. all top-k experts and weights).
        caption: a line shown above the text.

    Returns:
        HTML with inline styles only (no script, no external resources).
    """
    if len(pieces) != len(experts) or (details is not None and len(details) != len(pieces)):
        raise ValueError("pieces, experts and details must have one entry per token")
    spans = []
    for i, (piece, e) in enumerate(zip(pieces, experts, strict=True)):
        tip = details[i] if details is not None else f"expert {e}" if e >= 0 else "not routed"
        spans.append(
            f'<span class="tok" data-expert="{int(e)}" title="{html.escape(tip, quote=True)}" '
            f'style="background:{expert_colour(int(e), num_experts)}">{html.escape(piece)}</span>'
        )
    legend = "".join(
        f'<span style="background:{expert_colour(e, num_experts)};padding:0 .5em;margin-right:.3em;'
        f'border-radius:3px">expert {e}</span>'
        for e in range(num_experts)
    )
    cap = f'<p style="margin:.2em 0">{html.escape(caption)}</p>' if caption else ""
    return (
        f'<div class="token-colouring">{cap}'
        f'<div class="legend" style="margin:.4em 0;font-size:.85em">{legend}</div>'
        '<div style="white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;'
        f'line-height:1.8;border:1px solid #dde;padding:.6em">{"".join(spans)}</div></div>'
    )
