"""Packing encoded examples into fixed-length blocks without splitting or mixing them.

A block is a (3, T) long tensor: row 0 the input ids, row 1 the labels (-100 = no loss), row 2 the
segment ids (0, 1, 2, ... for the examples in the block, -1 for padding). The model turns segment
ids into a block-diagonal causal mask and per-example positions (``lmbricks.nn.LM.forward(...,
doc_ids=...)``), so a packed example is computed exactly as it would be alone. The training loop
receives blocks stacked as (N, 3, T).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.sft.encode import IGNORE, Encoded

PAD_SEGMENT = -1


def pack_examples(examples: Sequence[Encoded], seq_len: int, pad_id: int) -> Tensor:
    """First-fit packing (in the given order) of whole examples into blocks of ``seq_len`` tokens.

    Args:
        examples: encoded examples, each at most ``seq_len`` tokens.
        seq_len: tokens per block.
        pad_id: token id of the padding (its labels are -100).

    Returns:
        (N, 3, seq_len) long: ids, labels, segment ids per block.

    Raises:
        ConfigError naming the record of an example longer than ``seq_len``.
    """
    bins: list[list[Encoded]] = []
    free: list[int] = []
    for ex in examples:
        if len(ex) > seq_len:
            raise ConfigError(f"{ex.where}: {len(ex)} tokens, longer than the context of {seq_len}")
        for b, room in enumerate(free):
            if len(ex) <= room:
                bins[b].append(ex)
                free[b] -= len(ex)
                break
        else:
            bins.append([ex])
            free.append(seq_len - len(ex))
    blocks = torch.empty(len(bins), 3, seq_len, dtype=torch.long)
    for b, members in enumerate(bins):
        blocks[b, 0].fill_(pad_id)
        blocks[b, 1].fill_(IGNORE)
        blocks[b, 2].fill_(PAD_SEGMENT)
        pos = 0
        for seg, ex in enumerate(members):
            n = len(ex)
            blocks[b, 0, pos : pos + n] = ex.input_ids
            blocks[b, 1, pos : pos + n] = ex.labels
            blocks[b, 2, pos : pos + n] = seg
            pos += n
    return blocks


def unpack_block(block: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The (ids, labels) of each example in a (3, T) block, padding left out (for inspection and tests)."""
    ids, labels, seg = block
    out = []
    for s in torch.unique(seg[seg != PAD_SEGMENT]).tolist():
        keep = seg == s
        out.append((ids[keep], labels[keep]))
    return out


def packing_efficiency(blocks: Tensor) -> float:
    """Fraction of block positions that hold example tokens (not padding)."""
    return float((blocks[:, 2] != PAD_SEGMENT).float().mean()) if len(blocks) else 0.0
