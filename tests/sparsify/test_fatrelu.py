"""FATReLU / ReGLU identities: threshold 0 is ReLU; the hand-written backward equals autograd."""

import torch
import torch.nn.functional as F

from lmbricks.moe.activations import ACTIVATIONS, ReGLU, fatrelu


def test_fatrelu_threshold_zero_is_relu() -> None:
    g = torch.randn(64, 32)
    assert torch.equal(fatrelu(g, 0.0), F.relu(g))


def test_fatrelu_zeroes_below_threshold() -> None:
    g = torch.tensor([-1.0, 0.1, 0.5, 0.6, 2.0])
    assert torch.equal(fatrelu(g, 0.5), torch.tensor([0.0, 0.0, 0.0, 0.6, 2.0]))


def test_reglu_registered_and_relu_gated() -> None:
    act = ACTIVATIONS["reglu"]
    h = torch.randn(8, 20)
    a, _ = act(h)
    assert torch.equal(a, F.relu(h[:, :10]) * h[:, 10:])
    assert torch.equal(act.inplace(h.clone()), a)
    out, s = torch.empty(8, 10), torch.empty(8, 10)
    act.into(h, out, s)
    assert torch.equal(out, a)


def test_reglu_backward_matches_autograd() -> None:
    act = ReGLU(threshold=0.3)
    h = torch.randn(16, 24, dtype=torch.float64, requires_grad=True)
    a, s = act(h)
    da = torch.randn_like(a)
    (ref,) = torch.autograd.grad(a, h, da)
    dh = act.backward(da, h.detach(), a.detach(), None if s is None else s.detach())
    torch.testing.assert_close(dh, ref)
