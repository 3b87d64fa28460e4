"""Fixtures for analysis tests: the tiny Llama loaded, and synthetic per-domain texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_TEXTS = {
    "en_prose": "Emma Woodhouse, handsome, clever, and rich, with a comfortable home. The quick brown fox. ",
    "code": "def main(): return 1 + 2 * x\ndef f(x): return x ^ 2 - 1\n",
    "zh": "你好，世界。你好，世界。Hallo Welt. Bonjour le monde. ",
}


def _fake_texts(domain: str, split: str) -> list[str]:
    """Per-domain documents for tests (train and test differ by a suffix)."""
    return [(_TEXTS[domain] + f" {split} ") * 40 for _ in range(3)]


@pytest.fixture(scope="session")
def tiny_model(tiny_llama: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="session")
def fake_texts() -> Any:
    """``(domain, split) -> documents`` for the ``texts_of`` parameters."""
    return _fake_texts
