"""Instruction tuning: chat data (JSONL and local corpora), chat templates, response-only labels,
boundary-respecting packing, parameter selection for MoE models, and held-out evaluation.

``lmbricks train`` runs it when the YAML says ``task: sft`` (see :mod:`lmbricks.sft.config`).
"""

from __future__ import annotations

from lmbricks.sft.config import SFTConfig
from lmbricks.sft.corpora import champ_examples, champ_records, dialogue_examples, parse_turns, split_champ
from lmbricks.sft.data import SFTData, build_sft_data
from lmbricks.sft.encode import IGNORE, Encoded, encode_all, encode_example
from lmbricks.sft.evaluate import generate_replies, response_loss
from lmbricks.sft.pack import pack_examples, packing_efficiency, unpack_block
from lmbricks.sft.params import apply_freeze, param_groups, param_kind
from lmbricks.sft.schema import Example, example_from_record, parse_jsonl, read_jsonl, write_jsonl
from lmbricks.sft.template import FALLBACK_TEMPLATE, parse_chatml, render_chat, response_spans

__all__ = [
    "FALLBACK_TEMPLATE",
    "IGNORE",
    "Encoded",
    "Example",
    "SFTConfig",
    "SFTData",
    "apply_freeze",
    "build_sft_data",
    "champ_examples",
    "champ_records",
    "dialogue_examples",
    "encode_all",
    "encode_example",
    "example_from_record",
    "generate_replies",
    "pack_examples",
    "packing_efficiency",
    "param_groups",
    "param_kind",
    "parse_chatml",
    "parse_jsonl",
    "parse_turns",
    "read_jsonl",
    "render_chat",
    "response_loss",
    "response_spans",
    "split_champ",
    "unpack_block",
    "write_jsonl",
]
