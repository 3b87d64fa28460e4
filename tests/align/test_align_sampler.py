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


def _grads_and_saved_bytes(tiny_llama: Path, recompute: bool) -> tuple[dict[str, torch.Tensor], int, torch.Tensor]:
    """One LoRA policy-gradient backward on fixed samples: the gradients, the bytes autograd kept for the
    backward pass during the forward, and the log-probabilities."""
    from lmbricks.align.logprob import token_logprobs
    from lmbricks.align.rl import policy_gradient_loss
    from lmbricks.train.lora import attach_lora

    model, tok = load_model(tiny_llama, hf_fallback=False)
    attach_lora(model, LoraSection(rank=4, alpha=8), 0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # LoRA's B starts at 0: move it so every factor gets a gradient
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ids = encode_policy_prompts(tok, PROMPTS, chat=False)
    resp = [[5, 9, 11, 3], [7, 7, 2], [13, 1, 4, 8, 6]]
    saved = [0]

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        logp, mask = token_logprobs(model, ids, resp, recompute=recompute)
        ref = logp.detach() - 0.1
    loss, _ = policy_gradient_loss(logp, ref, mask, torch.tensor([1.0, -0.5, 0.25]), kl_coef=0.1)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert not any(".block." in n for n in grads)  # the blocks were put back: names as before
    return grads, saved[0], logp.detach()


def test_recompute_gives_the_same_gradients_and_keeps_less(tiny_llama: Path) -> None:
    """Recomputing the blocks in the backward pass changes no gradient bit and no log-probability, and
    autograd keeps less during the forward (the blocks' inner activations are dropped)."""
    g0, kept0, lp0 = _grads_and_saved_bytes(tiny_llama, recompute=False)
    g1, kept1, lp1 = _grads_and_saved_bytes(tiny_llama, recompute=True)
    assert torch.equal(lp0, lp1)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k
    assert kept1 < kept0 / 2, (kept1, kept0)
