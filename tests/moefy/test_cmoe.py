"""CMoE carving on planted structure: it finds the shared neurons, the planted experts and routes to them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.moefy.cmoe import CMoERouter, activation_markers, carve, carve_model, cmoe_applied, cmoe_mask

H, GROUPS, N = 48, 7, 8  # hidden size, planted routed experts, neurons per expert
WIDTH = (GROUPS + 1) * N  # one shared expert


def _planted(tokens_per_group: int = 40, seed: int = 0, token_seed: int = 1) -> tuple[Tensor, ...]:
    """Gate/up weights where routed expert g's neurons read direction d_g and the shared ones read every
    token's common direction c; tokens are c + d_g + noise. Returns (w_gate, w_up, x, group of x, planted)."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(H, GROUPS + 1, generator=gen))[0].T * 3.0  # (G + 1, H) orthogonal
    owner = torch.randperm(WIDTH, generator=gen) // N  # neuron -> 0 (shared) or 1 + group
    w = dirs[owner] + 0.05 * torch.randn(WIDTH, H, generator=gen)  # (I, H)
    group = torch.arange(GROUPS).repeat_interleave(tokens_per_group)
    noise = torch.randn(group.numel(), H, generator=torch.Generator().manual_seed(token_seed))
    x = 0.5 * dirs[0] + dirs[1 + group] + 0.1 * noise  # (T, H)
    return w, w.clone(), x, group, owner


def test_markers_are_each_tokens_top_k() -> None:
    a = torch.tensor([[0.1, -3.0, 2.0, 0.0], [5.0, 0.2, -0.3, 0.1]])
    assert activation_markers(a, 2).tolist() == [[False, True, True, False], [True, False, True, False]]
    with pytest.raises(ConfigError, match="k"):
        activation_markers(a, 0)


def test_carving_recovers_the_planted_shared_and_routed_experts() -> None:
    w_gate, w_up, x, _group, owner = _planted()
    a = F.silu(x @ w_gate.T) * (x @ w_up.T)  # (T, I)
    c = carve(activation_markers(a, 2 * N), experts=GROUPS + 1, shared=1)
    assert torch.equal(c.shared, (owner == 0).nonzero().squeeze(1))
    found = {tuple(row.tolist()) for row in c.experts}
    planted = {tuple((owner == 1 + g).nonzero().squeeze(1).tolist()) for g in range(GROUPS)}
    assert found == planted
    assert all(int(owner[r]) == int(owner[row[0]]) for r, row in zip(c.representatives, c.experts, strict=True))


def test_analytic_router_routes_tokens_to_their_planted_expert() -> None:
    w_gate, w_up, x, group, owner = _planted()
    a = F.silu(x @ w_gate.T) * (x @ w_up.T)
    c = carve(activation_markers(a, 2 * N), experts=GROUPS + 1, shared=1)
    router = CMoERouter(w_gate, w_up, c.representatives, F.silu)
    held_w, _, held_x, held_group, _ = _planted(tokens_per_group=10, token_seed=2)  # same weights, new tokens
    assert torch.equal(held_w, w_gate)
    best = router.scores(held_x).argmax(dim=1)  # (T,) routed expert index
    planted_of_expert = torch.tensor([int(owner[row[0]]) - 1 for row in c.experts])
    assert float((planted_of_expert[best] == held_group).float().mean()) == 1.0
    # with the shared expert and the top-1 routed expert, a token keeps every neuron that fires for it
    mask = cmoe_mask(c, router.scores(x), top_k=1)
    assert mask.sum(1).tolist() == [2 * N] * x.shape[0]
    kept_mass = (a.abs() * mask).sum() / a.abs().sum()
    assert float(kept_mass) > 0.95
    shuffled = cmoe_mask(c, router.scores(x)[torch.randperm(x.shape[0])], top_k=1)
    assert float((a.abs() * shuffled).sum() / a.abs().sum()) < 0.8  # a wrong routing loses mass


def test_bad_carvings_are_refused() -> None:
    a = activation_markers(torch.randn(10, 64), 4)
    with pytest.raises(ConfigError, match="experts"):
        carve(a, experts=5, shared=1)
    with pytest.raises(ConfigError, match="shared"):
        carve(a, experts=8, shared=8)
    c = carve(a, experts=8, shared=2)
    assert c.shared.numel() == 16 and c.experts.shape == (6, 8)
    assert torch.equal(torch.cat([c.shared, c.experts.flatten()]).sort().values, torch.arange(64))
    with pytest.raises(ConfigError, match="top_k"):
        cmoe_mask(c, torch.randn(10, 6), top_k=7)


def test_applied_to_a_model_all_experts_is_dense_and_mask_matches(tiny_llama: Path) -> None:
    from lmbricks.nn.load import load_model

    model, _ = load_model(tiny_llama, hf_fallback=False)
    model = model.double()
    ids = torch.randint(3, 384, (2, 16), generator=torch.Generator().manual_seed(0))
    layers = carve_model(model, ids, experts=8, shared=2, k=16)
    assert len(layers) == 2 and layers[0].carving.experts.shape == (6, 8)
    with torch.no_grad():
        dense = model(ids[:1]).logits
        with cmoe_applied(model, layers, top_k=6):  # every routed expert on: the dense model
            full = model(ids[:1]).logits
        with cmoe_applied(model, layers, top_k=1):
            sparse = model(ids[:1]).logits
        after = model(ids[:1]).logits
        with cmoe_applied(model, layers, top_k=6, oracle=True):
            oracle_full = model(ids[:1]).logits
    torch.testing.assert_close(full, dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(oracle_full, dense, rtol=0, atol=1e-12)
    assert not torch.allclose(sparse, dense) and torch.equal(after, dense)  # the hooks are gone
    with pytest.raises(ConfigError, match="layers"), cmoe_applied(model, layers[:1], top_k=1):
        pass


def test_linear_router_variant_fits_and_all_experts_is_dense(tiny_llama: Path) -> None:
    from lmbricks.nn.load import load_model

    model, _ = load_model(tiny_llama, hf_fallback=False)
    model = model.double()
    ids = torch.randint(3, 384, (2, 16), generator=torch.Generator().manual_seed(0))
    layers = carve_model(model, ids, experts=8, shared=2, k=16, router="linear")
    analytic = carve_model(model, ids, experts=8, shared=2, k=16)
    assert torch.equal(layers[0].carving.experts, analytic[0].carving.experts)  # same carving, other router
    x = torch.randn(5, 32, dtype=torch.float64)
    assert layers[0].router.scores(x).shape == (5, 6)
    with torch.no_grad():
        dense = model(ids[:1]).logits
        with cmoe_applied(model, layers, top_k=6):
            full = model(ids[:1]).logits
    torch.testing.assert_close(full, dense, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="router"):
        carve_model(model, ids, experts=8, shared=2, k=16, router="mlp")
