"""Proxy-tuning: decode a model with another model's tuning (arXiv 2401.08565).

- :func:`proxy_generate`, :class:`ProxyDecoder`, :class:`Member`, :class:`DecodeConfig` (``decode.py``).
- :func:`combine_logits`: ``base + alpha * (expert - anti)``.
- :func:`check_shared_vocab`, :func:`shared_vocab_size`: the vocabulary check (``vocab.py``).
"""

from __future__ import annotations

from lmbricks.proxy.decode import (
    DecodeConfig,
    Member,
    ProxyDecoder,
    ProxyOutput,
    combine_logits,
    encode_prompts,
    left_pad,
    proxy_generate,
)
from lmbricks.proxy.vocab import check_shared_vocab, shared_vocab_size, token_list

__all__ = [
    "DecodeConfig",
    "Member",
    "ProxyDecoder",
    "ProxyOutput",
    "check_shared_vocab",
    "combine_logits",
    "encode_prompts",
    "left_pad",
    "proxy_generate",
    "shared_vocab_size",
    "token_list",
]
