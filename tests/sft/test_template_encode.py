"""Chat templates round-trip; only response tokens carry loss; too-long examples name their record."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tests.sft.conftest import chat

from lmbricks.errors import ConfigError
from lmbricks.sft import IGNORE, encode_example, parse_chatml, render_chat, response_spans
from lmbricks.sft.schema import Example


def test_fallback_template_round_trips(tok: Any, chats: list[Example]) -> None:
    assert not getattr(tok, "chat_template", None)  # the tiny tokenizer exercises the fallback
    for ex in chats:
        text = render_chat(tok, ex.messages)
        assert parse_chatml(text) == list(ex.messages)
    gen = render_chat(tok, chats[0].prompt_messages, add_generation_prompt=True)
    assert gen.endswith("<|im_start|>assistant\n")


def test_spans_cover_exactly_the_replies(tok: Any, chats: list[Example]) -> None:
    ex = chats[1]
    text, spans = response_spans(tok, ex.messages)
    replies = [m["content"] for m in ex.messages if m["role"] == "assistant"]
    assert [text[a:b] for a, b in spans] == [r + "<|im_end|>\n" for r in replies]


def test_prompt_tokens_carry_no_loss(tok: Any, chats: list[Example]) -> None:
    for ex in chats:
        enc = encode_example(tok, ex)
        assert enc.labels.shape == enc.input_ids.shape
        kept = enc.labels != IGNORE
        # labelled tokens are copies of the input ids
        assert torch.equal(enc.labels[kept], enc.input_ids[kept])
        # the labelled tokens decode to the replies (with their end-of-turn markers), nothing else
        replies = "".join(m["content"] + "<|im_end|>\n" for m in ex.messages if m["role"] == "assistant")
        assert tok.decode(enc.input_ids[kept]) == replies
        # and the unlabelled ones to the rest of the rendering
        text = render_chat(tok, ex.messages)
        assert len(tok.decode(enc.input_ids[~kept])) == len(text) - len(replies)
        assert enc.labels[0] == IGNORE


def test_too_long_names_record(tok: Any) -> None:
    ex = chat("hello " * 50, "hi", where="mine.jsonl: record 7")
    with pytest.raises(ConfigError, match="mine.jsonl: record 7: .* longer than the context of 16"):
        encode_example(tok, ex, max_len=16)


@pytest.mark.integration
def test_smollm_template_round_trips() -> None:
    from lmbricks.hub import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert parse_chatml(render_chat(tok, msgs)) == msgs
    enc = encode_example(tok, Example(messages=tuple(msgs)))
    assert tok.decode(enc.input_ids[enc.labels != IGNORE]).startswith("4<|im_end|>")
