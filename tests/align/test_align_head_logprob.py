"""The chunked head log-probabilities equal the unchunked ``log_softmax(h @ W.T)`` (values and gradients),
in fp32 and under bf16 autocast, with W trained or frozen, and keep no (N, V) tensor for the backward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmbricks.align.head_logprob import head_logprobs
from lmbricks.align.logprob import token_logprobs
from lmbricks.nn.load import load_model
from lmbricks.train.lora import LoraSection, attach_lora

N, H, V = 37, 16, 101


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(N, H, generator=g) * 2).to(dtype)
    w = torch.randn(V, H, generator=g).to(dtype)
    targets = torch.randint(0, V, (N,), generator=g)
    upstream = torch.randn(N, generator=g)  # a gradient per token, as RL's advantages and KL give
    return h, w, targets, upstream


def _unchunked(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy((h @ w.T).float(), targets, reduction="none")  # the old path: (N, V) logits


def _value_and_grads(fn, h, w, targets, upstream, train_w: bool, autocast: bool):  # type: ignore[no-untyped-def]
    h = h.clone().requires_grad_(True)
    w = w.clone().requires_grad_(train_w)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fn(h, w, targets)
    (out * upstream).sum().backward()
    return out.detach(), h.grad, w.grad


@pytest.mark.parametrize("train_w", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 5, N, 1000])
def test_equal_to_the_unchunked_logits_fp32(train_w: bool, chunk_rows: int) -> None:
    h, w, t, g = _inputs()
    got = _value_and_grads(lambda a, b, c: head_logprobs(a, b, c, chunk_rows * V), h, w, t, g, train_w, False)
    want = _value_and_grads(_unchunked, h, w, t, g, train_w, False)
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    if train_w:
        torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
    else:
        assert got[2] is None and want[2] is None
    assert float(got[1].abs().max()) > 1e-2  # not vacuous: a real gradient


@pytest.mark.parametrize("train_w", [True, False])
def test_equal_to_the_unchunked_logits_under_bf16_autocast(train_w: bool) -> None:
    """Same rounding points as ``lm_head(h).float()`` then cross-entropy under autocast: products in
    bf16, softmax in fp32; gradients agree to bf16 rounding."""
    h, w, t, g = _inputs()
    got = _value_and_grads(lambda a, b, c: head_logprobs(a, b, c, 7 * V), h, w, t, g, train_w, True)
    want = _value_and_grads(_unchunked, h, w, t, g, train_w, True)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-4)  # the same bf16 logits, fp32 softmax
    torch.testing.assert_close(got[1], want[1], rtol=2e-2, atol=2e-2)
    if train_w:
        torch.testing.assert_close(got[2], want[2], rtol=2e-2, atol=2e-2)


def _kept(fn, h, w, t, train_w: bool) -> int:  # type: ignore[no-untyped-def]
    """Elements autograd keeps for the backward pass while ``fn`` runs forward."""
    kept = [0]

    def keep(x: torch.Tensor) -> torch.Tensor:
        kept[0] += x.numel()
        return x

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
        fn(h.clone().requires_grad_(True), w.clone().requires_grad_(train_w), t)
    return kept[0]


@pytest.mark.parametrize("train_w", [True, False])
def test_keeps_no_logits_for_the_backward(train_w: bool) -> None:
    h, w, t, _ = _inputs()
    chunked = _kept(lambda a, b, c: head_logprobs(a, b, c, 5 * V), h, w, t, train_w)
    assert 0 < chunked <= h.numel() + w.numel() + N * H + 2 * N  # h, W, and (N,) or (N, H): no (N, V)
    assert _kept(_unchunked, h, w, t, train_w) >= N * V  # the old path keeps the logits


def test_bad_shapes_are_named() -> None:
    h, w, t, _ = _inputs()
    with pytest.raises(ValueError, match="expected h"):
        head_logprobs(h, w[:, :3], t)


def _model_grads(tiny_llama: Path, lora: bool, wrapped: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """token_logprobs of a tiny policy and its gradients; ``wrapped``: a hook on the head forces the
    unchunked path (the head then runs as a module)."""
    model, _ = load_model(tiny_llama, hf_fallback=False)
    if lora:
        attach_lora(model, LoraSection(rank=4, alpha=8), 0)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    if wrapped:
        model.lm_head.register_forward_hook(lambda m, i, o: o)
    logp, mask = token_logprobs(model, [[5, 6, 7], [9], [3, 4]], [[10, 11], [12, 13, 14, 15], [2, 8, 1]])
    w = torch.tensor([[0.3, -1.0, 0, 0], [0.5, 0.2, -0.7, 1.1], [-0.4, 0.9, 0.6, 0]])
    (logp * w).sum().backward()
    return logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [True, False])
def test_token_logprobs_chunked_equals_the_module_head(tiny_llama: Path, lora: bool) -> None:
    lp1, g1 = _model_grads(tiny_llama, lora, wrapped=False)
    lp0, g0 = _model_grads(tiny_llama, lora, wrapped=True)
    torch.testing.assert_close(lp1, lp0, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g0.keys() and len(g1) > 0
    assert lora or any("embed" in k or "lm_head" in k for k in g1)  # full fine-tuning trains the head
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-6, msg=k)
