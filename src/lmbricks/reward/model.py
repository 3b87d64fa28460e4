"""A scalar reward model: a causal LM backbone with a linear head on the last token's hidden state.

``score = head(norm(h_L)[last token])`` (no bias), the layout of Hugging Face's
``*ForSequenceClassification`` with ``num_labels=1`` (the ``score`` matrix), which is how the
model is saved (:mod:`lmbricks.reward.io`). Sequences in a batch are right-padded: attention is
causal, so padding after the last token cannot change it.

For cheap training the backbone splits at a layer: :meth:`RewardModel.trunk` runs the frozen
lower part once (features can be cached and shared by every member of a WARM ensemble) and
:meth:`RewardModel.top` runs the trained upper layers, the final norm and the head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.nn.model import LM, LayerInputs, rope_cos_sin


class RewardModel(nn.Module):
    """``RewardModel(backbone)``: the LM's layers and final norm plus ``head`` (Linear(H, 1), no bias)."""

    def __init__(self, backbone: LM) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.cfg.hidden_size, 1, bias=False)
        nn.init.zeros_(self.head.weight)

    @property
    def num_layers(self) -> int:
        return self.backbone.cfg.num_layers

    def _tables(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.backbone.cfg
        assert cfg.head_dim is not None
        return rope_cos_sin(torch.arange(t, device=x.device), cfg.head_dim, cfg.rope_theta, x.dtype)

    def trunk(self, ids: Tensor, upto: int) -> Tensor:
        """Hidden states after the embedding and the first ``upto`` layers: (B, T) -> (B, T, H)."""
        x = self.backbone.embed(ids)
        cos, sin = self._tables(ids.shape[1], x)
        for block in list(self.backbone.layers)[:upto]:
            x, _ = block(x, LayerInputs(cos, sin, None, ids.shape[1] > 1))
        return x

    def top(self, x: Tensor, lengths: Tensor, start: int) -> Tensor:
        """Scores from hidden states ``x`` (B, T, H) entering layer ``start``; ``lengths`` (B,) -> (B,)."""
        cos, sin = self._tables(x.shape[1], x)
        for block in list(self.backbone.layers)[start:]:
            x, _ = block(x, LayerInputs(cos, sin, None, x.shape[1] > 1))
        h = self.backbone.norm(x)  # (B, T, H)
        last = h[torch.arange(h.shape[0], device=h.device), lengths - 1]  # (B, H)
        return self.head(last).squeeze(-1).float()

    def forward(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Scores of right-padded ``ids`` (B, T) whose real lengths are ``lengths`` (B,) (default T)."""
        if lengths is None:
            lengths = torch.full((ids.shape[0],), ids.shape[1], device=ids.device)
        return self.top(self.trunk(ids, 0), lengths, 0)

    def trainable_from(self, start: int) -> list[nn.Parameter]:
        """Freeze the embedding and layers before ``start``; return the rest (layers, norm, head)."""
        for p in self.parameters():
            p.requires_grad_(False)
        params: list[Any] = [*self.head.parameters(), *self.backbone.norm.parameters()]
        for block in list(self.backbone.layers)[start:]:
            params += list(block.parameters())
        for p in params:
            p.requires_grad_(True)
        return params


def pad_right(seqs: list[Tensor], value: float = 0) -> tuple[Tensor, Tensor]:
    """Stack (T_i, ...) tensors right-padded to the longest: -> (B, T, ...), lengths (B,)."""
    lengths = torch.tensor([len(s) for s in seqs])
    width = int(lengths.max())
    out = seqs[0].new_full((len(seqs), width, *seqs[0].shape[1:]), value)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths
