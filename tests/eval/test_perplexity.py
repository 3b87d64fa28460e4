"""Perplexity and bits per byte: windowed scoring equals a direct computation."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmbricks.eval import evaluate_domains, evaluate_text, score_tokens

TEXT = "Emma Woodhouse, handsome, clever, and rich. def main(): return 1 + 2 * x\n你好，世界。" * 3


def _load(path: Path) -> tuple[torch.nn.Module, object]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_single_window_matches_direct_cross_entropy(tiny_llama: Path) -> None:
    model, tok = _load(tiny_llama)
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    start = tok.bos_token_id
    nll = score_tokens(model, ids, start, seq_len=ids.numel() + 1)
    full = torch.cat([torch.tensor([start]), ids])[None]
    with torch.no_grad():
        logits = model(full).logits[0, :-1]
    expected = F.cross_entropy(logits.float(), full[0, 1:], reduction="none")
    torch.testing.assert_close(nll, expected, rtol=1e-5, atol=1e-5)


def test_windows_and_batches_cover_every_token(tiny_llama: Path) -> None:
    model, tok = _load(tiny_llama)
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    a = score_tokens(model, ids, tok.bos_token_id, seq_len=16, batch_size=1)
    b = score_tokens(model, ids, tok.bos_token_id, seq_len=16, batch_size=3)
    assert a.shape == ids.shape and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # padding must not change scores


def test_bits_per_byte_definition(tiny_llama: Path) -> None:
    model, tok = _load(tiny_llama)
    r = evaluate_text(model, tok, TEXT)
    assert r.bytes == len(TEXT.encode())
    assert math.isclose(r.bpb, r.nll / math.log(2) / r.bytes)
    assert math.isclose(r.ppl, math.exp(r.nll / r.tokens))
    capped = evaluate_text(model, tok, TEXT, max_tokens=10)
    assert capped.tokens == 10 and 0 < capped.bytes < r.bytes


def test_evaluate_domains_uses_given_text_source(tiny_llama: Path) -> None:
    model, tok = _load(tiny_llama)
    texts = {"a": TEXT, "b": TEXT[:40]}
    seen: list[tuple[str, str, int]] = []

    def text_of(domain: str, split: str, max_bytes: int) -> str:
        seen.append((domain, split, max_bytes))
        return texts[domain][:max_bytes]

    results = evaluate_domains(model, tok, ["a", "b"], max_bytes=100, text_of=text_of)
    assert list(results) == ["a", "b"] and seen == [("a", "test", 100), ("b", "test", 100)]
    assert results["b"].bytes == len(TEXT[:40].encode())
