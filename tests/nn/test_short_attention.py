"""The batched causal attention of short bf16 training sequences equals SDPA up to bf16 rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmbricks.nn import LM, LMConfig
from lmbricks.nn import attention as attention_mod
from lmbricks.nn.attention import short_causal_applies, short_causal_attention


def _qkv(nh: int, nkv: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, n, 24, 16, generator=gen, requires_grad=True) for n in (nh, nkv, nkv))


@pytest.mark.parametrize(("nh", "nkv"), [(4, 2), (4, 4)])  # grouped and plain heads
def test_short_causal_attention_is_as_close_to_fp64_as_sdpa(nh: int, nkv: int) -> None:
    q, k, v = _qkv(nh, nkv)
    up = torch.randn(2, nh, 24, 16, generator=torch.Generator().manual_seed(1))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q64, k64, v64, is_causal=True, enable_gqa=True)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), up.double())
    errors = {}
    for name, fn in {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        "short": lambda: short_causal_attention(q, k, v),
    }.items():
        with torch.autocast("cpu", torch.bfloat16):
            y = fn()
        grads = torch.autograd.grad(y.float(), (q, k, v), up)
        errors[name] = [float((y.double() - ref).abs().max())] + [
            float((a.double() - b).abs().max() / b.abs().max()) for a, b in zip(grads, ref_grads, strict=True)
        ]
    # its scores are rounded to bf16 before the softmax (as transformers' eager attention under
    # autocast), flash keeps them in fp32: up to ~2.5x flash's error here, never a different function
    for got, sdpa in zip(errors["short"], errors["sdpa"], strict=True):
        assert got <= 3 * sdpa + 1e-3, errors
    assert errors["short"][0] < 0.05


def test_short_path_only_for_cpu_bf16_causal_training() -> None:
    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        assert short_causal_applies(q, True, False)
        assert not short_causal_applies(q, False, True)  # a mask (packed examples, window, cache)
        with torch.no_grad():
            assert not short_causal_applies(q, True, False)  # inference keeps SDPA
        long_q = torch.randn(1, 2, attention_mod.MAX_TOKENS + 1, 4, requires_grad=True)
        assert not short_causal_applies(long_q, True, False)  # its (T, T) scores would grow too large
        wide_q = torch.randn(64, 16, 256, 4, requires_grad=True)  # 64 x 16 x 256^2 x 2 bytes = 128 MiB
        assert not short_causal_applies(wide_q, True, False)
    assert not short_causal_applies(q, True, False)  # fp32 keeps SDPA (and its bits)


def test_lm_loss_under_autocast_agrees_with_the_sdpa_path(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)
    model = LM(cfg)
    ids = torch.randint(0, 64, (2, 20))
    results = []
    for limit in (attention_mod.MAX_TOKENS, 0):  # the batched path, then SDPA everywhere
        monkeypatch.setattr(attention_mod, "MAX_TOKENS", limit)
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = model.loss(ids).loss
        loss.backward()
        results.append((float(loss.detach()), model.layers[0].attn.qkv.weight.grad.clone()))
    (a, ga), (b, gb) = results
    assert abs(a - b) < 1e-2
    assert float((ga - gb).abs().max()) <= 0.05 * float(gb.abs().max())
