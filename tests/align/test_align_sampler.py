"""The RL sampler is built once and refreshed in place: the same weights, and the same samples for the same
seed, as a fresh merged copy of the policy at every step (LoRA and full fine-tuning)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lmbricks.align.sample import SamplingConfig, encode_policy_prompts, sample_responses
from lmbricks.align.trainee import make_trainee, plain_model, sampling_model
from lmbricks.nn.load import load_model
from lmbricks.train.lora import LoraSection

PROMPTS = ["Hello", "The quick brown fox", "2 + 2 ="]


def _fresh_copy(t: object, precision: str) -> torch.nn.Module:
    """What the sampler was before: a merged copy of the policy, cast once, at every step."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    m = plain_model(t)  # type: ignore[arg-type]
    return (copy.deepcopy(m) if m is t.model else m).to(dtype).eval()  # type: ignore[attr-defined]


def _train_a_step(t: object, seed: int) -> None:
    """Move every trainable weight, as an optimiser step would (the LoRA factors, or all weights)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.model.parameters():  # type: ignore[attr-defined]
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("lora", [True, False])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_refreshed_sampler_equals_a_fresh_copy(tiny_llama: Path, tmp_path: Path, lora: bool, precision: str) -> None:
    model, tok = load_model(tiny_llama, hf_fallback=False)
    t = make_trainee(model, tok, str(tiny_llama), LoraSection(rank=4, alpha=8) if lora else None, 1e-3, 0.0, 0,
                     tmp_path, None)  # fmt: skip
    ids = encode_policy_prompts(tok, PROMPTS, chat=False)
    cfg = SamplingConfig(max_new_tokens=8)
    first = sampling_model(t, precision)
    before = sample_responses(first, tok, ids, 3, cfg, seed=4).responses
    for step in range(2):
        _train_a_step(t, step)
        sampler = sampling_model(t, precision)
        assert sampler is first  # refreshed in place: no second model per step
        fresh = _fresh_copy(t, precision)
        want, got = fresh.state_dict(), sampler.state_dict()
        assert want.keys() == got.keys()
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
        samples = sample_responses(sampler, tok, ids, 3, cfg, seed=4).responses
        assert samples == sample_responses(fresh, tok, ids, 3, cfg, seed=4).responses
    assert samples != before  # not vacuous: the trained weights changed what is sampled
