"""Token counting and packing into fixed blocks joined by EOS."""

from __future__ import annotations

import pytest
import torch

from lmbricks.data import count_tokens, token_chunks
from lmbricks.errors import ConfigError
from lmbricks.testing import build_tiny_tokenizer

TEXTS = ["The cat sat on the mat.", "def f(x):\n    return x + 1\n", "Hello there, how are you?"]


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return build_tiny_tokenizer()


def _ids(tok, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_count_tokens_sums_documents(tok) -> None:  # type: ignore[no-untyped-def]
    assert count_tokens(tok, TEXTS) == sum(len(_ids(tok, t)) for t in TEXTS)
    assert count_tokens(tok, []) == 0


def test_chunks_are_the_eos_joined_stream_cut_into_blocks(tok) -> None:  # type: ignore[no-untyped-def]
    stream: list[int] = []
    for t in TEXTS:
        stream += _ids(tok, t) + [tok.eos_token_id]
    chunks = token_chunks(tok, TEXTS, seq_len=7)
    n = len(stream) // 7
    assert chunks.shape == (n, 7) and chunks.dtype == torch.long
    assert chunks.flatten().tolist() == stream[: n * 7]
    assert (chunks == tok.eos_token_id).sum().item() == stream[: n * 7].count(tok.eos_token_id)


def test_max_tokens_limits_the_stream(tok) -> None:  # type: ignore[no-untyped-def]
    full = token_chunks(tok, TEXTS * 20, seq_len=8)
    part = token_chunks(tok, TEXTS * 20, seq_len=8, max_tokens=20)
    assert part.shape == (2, 8)
    assert torch.equal(part, full[:2])


def test_short_input_gives_zero_blocks_and_bad_args_fail(tok) -> None:  # type: ignore[no-untyped-def]
    assert token_chunks(tok, ["hi"], seq_len=1000).shape == (0, 1000)
    with pytest.raises(ConfigError, match="seq_len"):
        token_chunks(tok, TEXTS, seq_len=0)
