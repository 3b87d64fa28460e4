"""The training-path fusions equal their plain forms: head + cross-entropy, split projections, RMSNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmbricks.nn import LM, LMConfig, lm_loss
from lmbricks.nn import loss as loss_mod
from lmbricks.nn.loss import linear_cross_entropy
from lmbricks.nn.rms_norm import rms_norm
from lmbricks.nn.split_linear import split_linear


@pytest.mark.parametrize("chunk_elements", [1 << 23, 40])  # one chunk; many chunks with a ragged last one
def test_linear_cross_entropy_matches_cross_entropy(monkeypatch: pytest.MonkeyPatch, chunk_elements: int) -> None:
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(13, 6, dtype=torch.double, generator=gen, requires_grad=True)
    w = torch.randn(9, 6, dtype=torch.double, generator=gen, requires_grad=True)
    targets = torch.randint(0, 9, (13,), generator=gen)
    targets[[2, 7]] = -100
    ref = F.cross_entropy(h @ w.T, targets, ignore_index=-100)
    gh, gw = torch.autograd.grad(3.0 * ref, (h, w))
    got = linear_cross_entropy(h, w, targets)
    fh, fw = torch.autograd.grad(3.0 * got, (h, w))  # a non-unit upstream gradient is applied
    torch.testing.assert_close(got.double(), ref)
    torch.testing.assert_close(fh, gh)
    torch.testing.assert_close(fw, gw)


def test_all_targets_ignored_gives_zero_loss_and_gradient() -> None:
    h = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(5, 3, requires_grad=True)
    loss = linear_cross_entropy(h, w, torch.full((4,), -100))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert h.grad is not None and w.grad is not None
    assert not h.grad.any() and not w.grad.any()


def test_lm_loss_method_equals_loss_of_logits() -> None:
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_layers=2, num_heads=4, num_kv_heads=2)
    a, b = LM(cfg), LM(cfg)
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 50, (2, 9))
    labels = ids.clone()
    labels[:, :3] = -100  # prompt tokens carry no loss
    ref = lm_loss(a(ids).logits, ids, labels)
    ref.backward()
    got = b.loss(ids, labels).loss
    got.backward()
    torch.testing.assert_close(got, ref)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert pa.grad is not None and pb.grad is not None
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("used", [3, 2])  # every part reaches the loss; the last one does not
def test_split_linear_matches_fused_output_split(bias: bool, used: int) -> None:
    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(5, 9, bias=bias).double()
    x = torch.randn(2, 3, 5, dtype=torch.double, generator=gen, requires_grad=True)
    sizes = (4, 3, 2)
    assert torch.autograd.gradcheck(lambda x: split_linear(lin, x, sizes)[:used], (x,))
    params = [x, *lin.parameters()]
    ref = lin(x).split(list(sizes), dim=-1)[:used]
    up = [torch.randn(r.shape, dtype=r.dtype, generator=gen) for r in ref]
    expected = torch.autograd.grad(ref, params, up)
    got_parts = split_linear(lin, x, sizes)
    for a, b in zip(got_parts, lin(x).split(list(sizes), dim=-1), strict=True):
        torch.testing.assert_close(a, b)
    got = torch.autograd.grad(got_parts[:used], params, up)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_rms_norm_backward_matches_autograd() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.double, generator=gen, requires_grad=True)
    w = torch.randn(8, dtype=torch.double, generator=gen, requires_grad=True)
    xf, wf = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    y = rms_norm(xf, wf, 1e-6)
    with torch.no_grad():  # the plain path (inference), Llama's operations
        ref = rms_norm(xf, wf, 1e-6)
    assert torch.equal(y, ref)  # the same forward bits
    g = torch.randn(y.shape, generator=gen)
    dx, dw = torch.autograd.grad(y, (xf, wf), g)
    x2, w2 = x.detach().requires_grad_(), w.detach().requires_grad_()
    ref64 = w2 * x2 * torch.rsqrt(x2.pow(2).mean(-1, keepdim=True) + 1e-6)
    ex, ew = torch.autograd.grad(ref64, (x2, w2), g.double())
    torch.testing.assert_close(dx.double(), ex, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw.double(), ew, rtol=1e-4, atol=1e-5)


def _autocast_reference(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", torch.bfloat16):  # transformers' head under autocast: bf16 logits, fp32 loss
        return F.cross_entropy((h @ w.T).float(), targets, ignore_index=-100)


@pytest.mark.parametrize("chunk_elements", [1 << 23, 40 * 50])  # one chunk; seven with a ragged last one
def test_linear_cross_entropy_under_autocast_matches_bf16_logits(
    monkeypatch: pytest.MonkeyPatch, chunk_elements: int
) -> None:
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(300, 32, generator=gen, requires_grad=True)
    w = (0.3 * torch.randn(50, 32, generator=gen)).requires_grad_()
    targets = torch.randint(0, 50, (300,), generator=gen)
    targets[[3, 9]] = -100
    ref = _autocast_reference(h, w, targets)
    gh, gw = torch.autograd.grad(ref, (h, w))
    with torch.autocast("cpu", torch.bfloat16):
        got = linear_cross_entropy(h, w, targets)
    fh, fw = torch.autograd.grad(got, (h, w))
    assert got.dtype == torch.float32 and fh.dtype == h.dtype and fw.dtype == w.dtype
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-6)  # the same bf16 logits, fp32 softmax
    # the gradients are rounded to bf16 once (8 bits): within 1% of the largest entry
    assert float((fh - gh).abs().max()) <= 1e-2 * float(gh.abs().max())
    assert float((fw - gw).abs().max()) <= 1e-2 * float(gw.abs().max())


def test_linear_cross_entropy_under_autocast_multiplies_in_bf16() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[torch.dtype] = []

    class Products(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func.__name__.startswith(("mm", "addmm")):
                seen.extend(a.dtype for a in args[:3] if isinstance(a, torch.Tensor))
            return func(*args, **(kwargs or {}))

    h = torch.randn(16, 8, requires_grad=True)
    w = torch.randn(12, 8, requires_grad=True)
    with Products(), torch.autocast("cpu", torch.bfloat16):
        linear_cross_entropy(h, w, torch.randint(0, 12, (16,))).backward()
    assert len(seen) >= 6 and set(seen) == {torch.bfloat16}  # logits, dL/dh and dL/dW, each two operands


def test_linear_cross_entropy_under_autocast_keeps_an_underflowing_target_finite() -> None:
    h = torch.zeros(2, 4, requires_grad=True)
    w = torch.zeros(6, 4)
    w[0, 0], w[5, 0] = 200.0, -200.0  # row 0: the target's logit sits 400 below the largest one
    with torch.no_grad():
        h[:, 0] = 1.0
    targets = torch.tensor([5, 0])
    with torch.autocast("cpu", torch.bfloat16):
        got = linear_cross_entropy(h, w, targets)
    ref = _autocast_reference(h, w, targets)
    assert torch.isfinite(got) and abs(float(got.detach()) - float(ref)) < 1e-3 * float(ref)
