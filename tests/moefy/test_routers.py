"""Routers: the MLP router learns planted structure; the centroid router is what it claims."""

from __future__ import annotations

import pytest
import torch

from lmbricks.analysis import find_ffns
from lmbricks.moefy import make_config, moefied_layers, moefy_model
from lmbricks.moefy.routers import (
    CentroidRouter,
    expert_output_norms,
    fit_linear_router,
    topk_mask,
    train_mlp_router,
)
from lmbricks.moefy.selection import routed_mask


def _recall(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Share of the oracle's experts that the prediction also picked."""
    return float((pred & true).sum() / true.sum())


def test_mlp_router_learns_planted_mass() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 16, generator=gen)
    proj = torch.randn(16, 8, generator=gen)
    mass = torch.nn.functional.softplus(2 * x @ proj)  # each expert's mass is a function of x
    router = train_mlp_router(x[:3000], mass[:3000], label_k=2, hidden=32, steps=200, seed=0)
    true = topk_mask(mass[3000:], 2)
    with torch.no_grad():
        learned = _recall(topk_mask(router.logits(x[3000:]), 2), true)
    chance = _recall(topk_mask(torch.randn(1000, 8, generator=gen), 2), true)
    assert learned > 0.8 and chance < 0.4


@pytest.mark.parametrize("objective", ["soft", "bce"])
def test_mlp_router_objectives_both_learn(objective: str) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 16, generator=gen)
    target = torch.nn.functional.softplus(2 * x @ torch.randn(16, 8, generator=gen))
    router = train_mlp_router(x[:2000], target[:2000], 2, hidden=32, steps=200, objective=objective)
    with torch.no_grad():
        assert _recall(topk_mask(router.logits(x[2000:]), 2), topk_mask(target[2000:], 2)) > 0.8


def test_linear_router_recovers_planted_log_linear_importance() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2000, 12, generator=gen)
    w, b = torch.randn(12, 6, generator=gen), torch.randn(6, generator=gen)
    router = fit_linear_router(x, torch.exp(x @ w + b), ridge=0.0)
    torch.testing.assert_close(router.proj.weight, w.T, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(router.proj.bias, b, rtol=1e-4, atol=1e-4)


def test_expert_output_norms_match_per_expert_products() -> None:
    gen = torch.Generator().manual_seed(5)
    a, w_out = torch.randn(7, 12, generator=gen), torch.randn(3, 4, 5, generator=gen)  # E=3, n=4, H=5
    norms = expert_output_norms(a, w_out)
    for e in range(3):
        torch.testing.assert_close(norms[:, e], (a[:, 4 * e : 4 * e + 4] @ w_out[e]).norm(dim=-1))


def test_centroid_router_is_mean_of_normalised_rows() -> None:
    rows = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    router = CentroidRouter.from_rows(rows, 3)
    unit = torch.nn.functional.normalize(rows, dim=1)
    torch.testing.assert_close(router.centroids[1], unit[4:8].mean(0))


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_learned_router_beats_random_on_tiny_model_with_planted_gates(tiny_model, fake_texts, kind: str) -> None:
    model, tok = tiny_model
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # plant 4 groups of neurons sharing a gate direction
        for block in find_ffns(model):
            centres = torch.randn(4, 32, generator=gen)
            groups = torch.randperm(64, generator=gen) % 4
            block.gate.weight.copy_(3 * centres[groups] + 0.1 * torch.randn(64, 32, generator=gen))
    cfg = make_config(
        experts=4, top_k=1, split="kmeans", router=kind, router_steps=150, calib_chunks=4, calib_seq_len=64
    )
    moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b", "c"))
    layers = moefied_layers(model)
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        m.register_forward_pre_hook(lambda _mod, args, i=i: inputs.__setitem__(i, args[0]))
        for i, m in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            model(input_ids=torch.randint(3, 384, (4, 48), generator=gen))
    finally:
        for h in handles:
            h.remove()
    for i, ffn in enumerate(layers):
        x = inputs[i].reshape(-1, 32)
        with torch.no_grad():
            true = topk_mask(ffn.oracle_scores(ffn._dense_a(x)), 1)
            learned = _recall(routed_mask(ffn.router(x), 4), true)
        chance = _recall(topk_mask(torch.randn(x.shape[0], 4, generator=gen), 1), true)
        assert learned > chance + 0.2, (i, learned, chance)
