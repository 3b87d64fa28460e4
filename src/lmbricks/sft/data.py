"""Building the packed training and held-out blocks of an instruction-tuning run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.sft.config import SFTConfig
from lmbricks.sft.corpora import corpus_examples
from lmbricks.sft.encode import encode_all
from lmbricks.sft.pack import pack_examples, packing_efficiency
from lmbricks.sft.schema import Example, read_jsonl


@dataclass
class SFTData:
    """Packed blocks (N, 3, seq_len) for training and held-out loss, plus prompts to generate from."""

    train: Tensor
    held_out: Tensor
    prompts: list[Example]
    stats: dict[str, Any] = field(default_factory=dict)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def gather_examples(cfg: SFTConfig, held_out: bool) -> list[Example]:
    """The configured examples: train (sources' train split, ``jsonl``) or held-out
    (sources' validation split, ``eval_jsonl``); ``max_examples`` caps each source / file."""
    cap = cfg.max_examples
    out: list[Example] = []
    for name in cfg.sources:
        out += corpus_examples(name, "validation" if held_out else "train", cfg.max_turns)[:cap]
    for path in cfg.eval_jsonl if held_out else cfg.jsonl:
        out += read_jsonl(path)[:cap]
    return out


def build_sft_data(cfg: SFTConfig, tokenizer: Any) -> SFTData:
    """Encode (chat template, response-only labels) and pack the training and held-out examples.

    Raises:
        ConfigError naming the record of a bad example, or when no training example is left.
    """
    train_ex = gather_examples(cfg, held_out=False)
    eval_ex = gather_examples(cfg, held_out=True)[: max(cfg.eval_examples, cfg.generations)]
    enc, dropped = encode_all(tokenizer, train_ex, cfg.seq_len, cfg.drop_long)
    if not enc:
        raise ConfigError(f"sft: no training example fits sft.seq_len={cfg.seq_len}")
    held, held_dropped = encode_all(tokenizer, eval_ex[: cfg.eval_examples], cfg.seq_len, drop_long=True)
    pad = _pad_id(tokenizer)
    train = pack_examples(enc, cfg.seq_len, pad)
    held_blocks = pack_examples(held, cfg.seq_len, pad) if held else train[:0]
    stats = {
        "train_examples": len(enc),
        "dropped_long": dropped,
        "train_blocks": len(train),
        "packing_efficiency": round(packing_efficiency(train), 4),
        "response_tokens": int((train[:, 1] != -100).sum()),
        "tokens": int((train[:, 2] != -1).sum()),
        "held_out_examples": len(held),
        "held_out_dropped_long": held_dropped,
    }
    return SFTData(train=train, held_out=held_blocks, prompts=eval_ex[: cfg.generations], stats=stats)
