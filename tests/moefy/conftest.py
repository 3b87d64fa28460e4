"""Fixtures for MoEfication tests: the tiny Llama in float64 and synthetic calibration texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_TEXT = (
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home. def main(): return 1 + 2 * x\n"
    "你好，世界。User: hello there Assistant: hi, how are you? 2 + 2 = 4, x^2 - 1 = 0. "
)


def _fake_texts(domain: str, split: str) -> list[str]:
    """A few documents per (domain, split), distinct across domains."""
    return [f"{domain} {split} {i}: " + _TEXT * 12 for i in range(4)]


@pytest.fixture()
def tiny_model(tiny_llama: Path) -> tuple[Any, Any]:
    """A fresh tiny Llama (fp32) and its tokenizer for each test (conversion is in place)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="session")
def fake_texts() -> Any:
    """``(domain, split) -> documents`` for the ``texts_of`` parameters."""
    return _fake_texts
