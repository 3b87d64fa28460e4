"""Tokenising chats with response-only labels.

Labels are aligned with the input ids (Hugging Face's convention, shifted inside the loss): a token
keeps its id as label when it starts inside an assistant span, else -100 (no loss). The first
token of every example is always -100, so when examples are packed the last token of one example
never learns to predict the first token of the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.sft.schema import Example
from lmbricks.sft.template import response_spans

IGNORE = -100


@dataclass
class Encoded:
    """One tokenised example: ``input_ids`` and ``labels`` (T,) long; ``where`` names its record."""

    input_ids: Tensor
    labels: Tensor
    where: str

    def __len__(self) -> int:
        return int(self.input_ids.numel())


def encode_example(tokenizer: Any, example: Example, max_len: int | None = None) -> Encoded:
    """Render ``example`` with the chat template and label its response tokens.

    Args:
        tokenizer: a fast Hugging Face tokenizer (character offsets are needed).
        example: the chat.
        max_len: longest allowed sequence (the training context); longer raises.

    Returns:
        The encoded example.

    Raises:
        ConfigError naming the record when it is too long or no response token survives.
    """
    text, spans = response_spans(tokenizer, example.messages, example.where)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("instruction tuning needs a fast tokenizer (character offsets)")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor(enc["input_ids"], dtype=torch.long)  # (T,)
    starts = torch.tensor([a for a, _ in enc["offset_mapping"]], dtype=torch.long)  # (T,)
    in_span = torch.zeros_like(ids, dtype=torch.bool)
    for a, b in spans:
        in_span |= (starts >= a) & (starts < b)
    labels = torch.where(in_span, ids, torch.full_like(ids, IGNORE))
    labels[0] = IGNORE
    if max_len is not None and len(ids) > max_len:
        raise ConfigError(
            f"{example.where}: {len(ids)} tokens, longer than the context of {max_len} "
            "(raise sft.seq_len, shorten the example, or set sft.drop_long: true)"
        )
    if not bool((labels != IGNORE).any()):
        raise ConfigError(f"{example.where}: no response token after tokenisation (empty response)")
    return Encoded(input_ids=ids, labels=labels, where=example.where)


def encode_all(
    tokenizer: Any, examples: Sequence[Example], max_len: int | None = None, drop_long: bool = False
) -> tuple[list[Encoded], int]:
    """Encode every example; with ``drop_long`` too-long ones are skipped and counted instead.

    Returns:
        ``(encoded examples, number dropped for length)``.
    """
    out, dropped = [], 0
    for ex in examples:
        if drop_long:
            enc = encode_example(tokenizer, ex, None)
            if max_len is not None and len(enc) > max_len:
                dropped += 1
                continue
            out.append(enc)
        else:
            out.append(encode_example(tokenizer, ex, max_len))
    return out, dropped
