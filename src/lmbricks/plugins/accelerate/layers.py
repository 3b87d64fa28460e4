"""Variator's two layers: merge every r hidden vectors into one, and restore one vector per token.

Both are bottleneck MLPs added to a parameter-free path, with their output matrices initialised to
zero, so a fresh plug-in at r = 1 is the identity (the compressed vector of a one-token group is the
token's vector; the restored vector is the upper layers' output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Compressor(nn.Module):
    """``z = mean(h_1..h_r) + W2 silu(W1 [h_1; ..; h_r])``: one vector per group of r tokens.

    Args:
        hidden: the model's hidden size H.
        ratio: tokens per group r.
        bottleneck: the MLP's inner width.
    """

    def __init__(self, hidden: int, ratio: int, bottleneck: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.down = nn.Linear(ratio * hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, groups: Tensor) -> Tensor:
        """(B, G, r, H) -> (B, G, H)."""
        B, G, r, H = groups.shape
        mixed = self.up(F.silu(self.down(groups.reshape(B, G, r * H).to(self.down.weight.dtype))))
        return groups.mean(dim=2) + mixed.to(groups.dtype)


class Decompressor(nn.Module):
    """``y_t = u + W4 silu(W3 [u; h_t])``: a token's vector from a group's upper output u and its own h_t.

    ``h_t`` is the token's hidden state where the sequence was compressed (it knows the token and
    its past through the lower layers); ``u`` is what the upper layers made of the latest group that
    ends at or before the token (see :func:`lmbricks.plugins.accelerate.forward.source_groups`).

    Args:
        hidden: the model's hidden size H.
        bottleneck: the MLP's inner width.
    """

    def __init__(self, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(2 * hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, upper: Tensor, lower: Tensor) -> Tensor:
        """upper, lower (B, T, H) -> (B, T, H)."""
        both = torch.cat([upper, lower], dim=-1).to(self.down.weight.dtype)  # (B, T, 2H)
        return upper + self.up(F.silu(self.down(both))).to(upper.dtype)


class AcceleratePlugin(nn.Module):
    """One acceleration plug-in: compression after layer ``layer`` with ratio ``ratio``, and its decompression.

    Args:
        hidden: the base model's hidden size.
        ratio: tokens merged into one vector (r >= 1).
        layer: number of base layers run on the full sequence before compressing (1 <= layer < L).
        bottleneck: inner width of both MLPs.
    """

    def __init__(self, hidden: int, ratio: int, layer: int, bottleneck: int) -> None:
        super().__init__()
        self.ratio, self.layer, self.bottleneck = ratio, layer, bottleneck
        self.compress = Compressor(hidden, ratio, bottleneck)
        self.decompress = Decompressor(hidden, bottleneck)

    def num_parameters(self) -> int:
        """Parameters of both layers."""
        return sum(p.numel() for p in self.parameters())
