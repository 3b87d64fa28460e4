"""Proxy-tuning: decode a model with another model's tuning (arXiv 2401.08565).

- :func:`proxy_generate`, :class:`ProxyDecoder`, :class:`Member`, :class:`DecodeConfig` (``decode.py``).
- :func:`combine_logits`: ``base + alpha * (expert - anti)``.
- :func:`proxy_perplexity`, :class:`ProxyScores`: held-out perplexity of the ensemble per alpha (``score.py``).
- :func:`~lmbricks.proxy.compare.compare_proxy`: perplexity per alpha, decodes and tokens/s of the proxy
  against its members (``compare.py``).
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
from lmbricks.proxy.score import ProxyScores, proxy_perplexity
from lmbricks.proxy.vocab import check_shared_vocab, shared_vocab_size, token_list

__all__ = [
    "DecodeConfig",
    "Member",
    "ProxyDecoder",
    "ProxyOutput",
    "ProxyScores",
    "check_shared_vocab",
    "combine_logits",
    "encode_prompts",
    "left_pad",
    "proxy_generate",
    "proxy_perplexity",
    "shared_vocab_size",
    "token_list",
]
