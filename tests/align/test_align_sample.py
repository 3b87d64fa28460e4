"""Batched, KV-cached sampling: greedy limit equals the model's own decoding, seeds reproduce, filters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.align.sample import SamplingConfig, encode_policy_prompts, filter_logits, sample_responses
from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model

PROMPTS = ["The quick brown fox", "Hello", "def main(): return 1 + 2 * x and then"]


def test_top1_sampling_is_greedy_decoding_of_each_prompt_alone(tiny_llama: Path) -> None:
    # prompts of different lengths share a batch (left padding); top_k=1 makes sampling greedy, which
    # must equal LM.generate on each prompt alone, token for token
    model, tok = load_model(tiny_llama, hf_fallback=False)
    ids = encode_policy_prompts(tok, PROMPTS, chat=False)
    cfg = SamplingConfig(max_new_tokens=12, top_k=1, batch_size=8)
    got = sample_responses(model, tok, ids, 2, cfg, seed=3)
    for p, rows in zip(ids, got.responses, strict=True):
        ref = model.generate(torch.tensor([p]), 12, eos_token_id=tok.eos_token_id)[0, len(p) :].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert rows == [ref, ref]


def test_same_seed_same_samples_other_seed_other_samples(tiny_llama: Path) -> None:
    model, tok = load_model(tiny_llama, hf_fallback=False)
    ids = encode_policy_prompts(tok, PROMPTS, chat=False)
    cfg = SamplingConfig(max_new_tokens=10, batch_size=4)
    a = sample_responses(model, tok, ids, 3, cfg, seed=0)
    b = sample_responses(model, tok, ids, 3, cfg, seed=0)
    c = sample_responses(model, tok, ids, 3, cfg, seed=1)
    assert a.responses == b.responses and a.texts == b.texts
    assert a.responses != c.responses
    assert len(a.responses) == 3 and all(len(r) == 3 for r in a.responses)
    assert a.tokens == sum(len(x) for r in a.responses for x in r) > 0


def test_first_token_frequencies_follow_the_policy(tiny_llama: Path) -> None:
    # temperature 1: the first sampled token is a draw from softmax(logits) of the prompt
    model, tok = load_model(tiny_llama, hf_fallback=False)
    ids = encode_policy_prompts(tok, ["Hello"], chat=False)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor(ids)).logits[0, -1].float(), -1)
    top = int(probs.argmax())
    got = sample_responses(model, tok, ids, 2000, SamplingConfig(max_new_tokens=1, batch_size=500), seed=0)
    freq = sum(r[0] == top for r in got.responses[0]) / 2000
    assert abs(freq - float(probs[top])) < 4 * (float(probs[top]) * (1 - float(probs[top])) / 2000) ** 0.5 + 1e-3


def test_filters() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, SamplingConfig(top_k=2))[0, 2:]).all()
    assert not torch.isinf(filter_logits(logits, SamplingConfig(top_k=2))[0, :2]).any()
    p = torch.softmax(logits, -1)[0]  # 0.644, 0.237, 0.087, 0.032
    kept = ~torch.isinf(filter_logits(logits, SamplingConfig(top_p=0.8))[0])
    assert kept.tolist() == [True, True, False, False] and float(p[:2].sum()) >= 0.8
    torch.testing.assert_close(filter_logits(logits, SamplingConfig(temperature=2.0)), logits / 2)


def test_bad_prompts_are_refused(tiny_llama: Path) -> None:
    _, tok = load_model(tiny_llama, hf_fallback=False)
    with pytest.raises(ConfigError, match="no prompts"):
        encode_policy_prompts(tok, [], chat=False)
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        encode_policy_prompts(tok, ["a", "  "], chat=False)
