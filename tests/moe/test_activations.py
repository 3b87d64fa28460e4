"""The activation objects: every form (differentiable, in place, into slices, backward) agrees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmbricks.moe.activations import ACTIVATIONS


def _reference(name: str, h: torch.Tensor) -> torch.Tensor:
    if name == "swiglu":
        g, u = h.chunk(2, dim=1)
        return F.silu(g) * u
    if name == "reglu":
        g, u = h.chunk(2, dim=1)
        return F.relu(g) * u
    return F.gelu(h) if name == "gelu" else F.relu(h)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_form_matches_the_reference(name: str) -> None:
    act = ACTIVATIONS[name]
    assert act.name == name and act.width_in(6) == (12 if act.gated else 6)
    h = torch.randn(5, act.width_in(6), dtype=torch.double, requires_grad=True)
    want = _reference(name, h)
    got, saved = act(h)
    torch.testing.assert_close(got, want)
    assert (saved is not None) == act.gated
    with torch.no_grad():
        torch.testing.assert_close(act.inplace(h.detach().clone()), want.detach())
        a = torch.empty(5, 6, dtype=torch.double)
        s = torch.empty(5, 6, dtype=torch.double) if act.gated else None
        act.into(h.detach(), a, s)
        torch.testing.assert_close(a, want.detach())
        da = torch.randn(5, 6, dtype=torch.double)
        dh = act.backward(da, h.detach(), a, s)
    (expected,) = torch.autograd.grad(want, h, da)
    torch.testing.assert_close(dh, expected)
