"""Tiny tokenizers built with ``tokenizers`` (byte-level and SentencePiece-style) and tiny models for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lmbricks.testing import save_tiny_model, tiny_llama_config

DONOR_TEXT = (
    "The quick brown fox naps under the old oak tree. import os; print(os.getcwd())\n"
    "Elizabeth Bennet walked quickly through the wet fields. 3 * 3 = 9, y^2 + 1 > 0.\n"
    "Assistant: sure, here is the answer. 早上好，朋友。Guten Morgen. ¿Qué tal?\n"
)
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bytelevel_tokenizer(text: str, vocab_size: int, specials: list[str], eos: str, bos: str | None = None) -> Any:
    """A byte-level BPE tokenizer trained on ``text`` (every byte representable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=bos, pad_token=specials[0])


def sentencepiece_tokenizer(text: str, vocab_size: int) -> Any:
    """A SentencePiece-style BPE (``▁`` for spaces, byte fallback) trained on ``text``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback()])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", *bytes_], show_progress=False
    )
    tok.train_from_iterator([text] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", bos_token="<s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def donor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer-only directory: a byte-level BPE of 320 tokens on other text, with the chat specials."""
    out = tmp_path_factory.mktemp("donor_tok")
    bytelevel_tokenizer(DONOR_TEXT, 320, CHAT_SPECIALS, "<|im_end|>", "<|im_start|>").save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def donor_model(tmp_path_factory: pytest.TempPathFactory, donor_dir: Path) -> Path:
    """A tiny model (hidden 48) that uses the donor tokenizer: its embeddings are OMP's donor-side space."""
    out = tmp_path_factory.mktemp("donor_model")
    save_tiny_model(out, tiny_llama_config(vocab_size=320, hidden_size=48, intermediate_size=96), seed=3)
    for f in donor_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """A fresh tiny Llama (untied head, vocab 384) per test, safe to compare against after a run."""
    return save_tiny_model(tmp_path / "model", tiny_llama_config(), seed=0)
