"""Fixtures for instruction-tuning tests: the tiny tokenizer (no chat template: the fallback) and chats."""

from __future__ import annotations

from typing import Any

import pytest

from lmbricks.sft import Example


@pytest.fixture(scope="session")
def tok() -> Any:
    from lmbricks.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()


def chat(*turns: str, where: str = "test") -> Example:
    roles = ["user", "assistant"]
    return Example(messages=tuple({"role": roles[i % 2], "content": t} for i, t in enumerate(turns)), where=where)


@pytest.fixture
def chats() -> list[Example]:
    return [
        chat("hello there", "hi, how are you?"),
        chat("What is 2 + 2?", "2 + 2 = 4", "and x^2 - 1 = 0?", "x = 1 or x = -1"),
        chat("Bonjour le monde", "Hallo Welt. The quick brown fox."),
        chat("def main(): return 1", "It returns 1."),
    ]
