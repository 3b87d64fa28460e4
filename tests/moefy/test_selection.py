"""MoEfied routers speak the moe vocabulary: RouterOutput slots, top-K and dynamic-K rules, straight-through weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmbricks.errors import ConfigError
from lmbricks.moe.types import RouterOutput
from lmbricks.moefy.evaluate import DenseFFN
from lmbricks.moefy.routers import CentroidRouter, LinearRouter, MLPRouter
from lmbricks.moefy.runtime import MoefiedFFN
from lmbricks.moefy.selection import dynamic_mask, routed_gates, routed_mask, share_slots, topk_mask


def _x(n: int = 10, h: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, h, generator=torch.Generator().manual_seed(seed))


def test_top_k_router_output() -> None:
    centroids = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    router = CentroidRouter(centroids, top_k=2)
    x = _x()
    with torch.no_grad():
        out = router(x)
    assert isinstance(out, RouterOutput) and router.num_experts == 5 and router.hidden_size == 6
    torch.testing.assert_close(out.logits, x @ centroids.T)
    torch.testing.assert_close(out.probs, (x @ centroids.T).softmax(-1))
    assert out.top_k == 2 and out.mask is None and out.weights.dtype == torch.float32
    assert torch.equal(out.weights, torch.ones(10, 2))
    scores = out.logits.gather(1, out.indices)  # best-scored first
    assert bool((scores[:, 0] >= scores[:, 1]).all())
    assert torch.equal(routed_mask(out, 5), topk_mask(x @ centroids.T, 2))


def test_dynamic_router_output_masks_slots_beyond_the_threshold() -> None:
    router = LinearRouter(6, 5, dynamic_threshold=0.6)
    x = _x(seed=2)
    with torch.no_grad():
        out = router(x)
    assert out.mask is not None and out.mask.shape == out.indices.shape
    counts = out.mask.sum(-1)
    assert int(counts.max()) == out.top_k and int(counts.min()) >= 1
    # routed slots are a prefix of each row, ranked by share
    assert bool((out.mask[:, 1:] <= out.mask[:, :-1]).all())
    assert torch.equal(out.weights, out.mask.float())
    assert torch.equal(routed_mask(out, 5), dynamic_mask(out.probs, 0.6))
    gates = routed_gates(out, 5)
    assert torch.equal(gates, routed_mask(out, 5).float())


def test_weights_are_one_with_the_gradient_of_the_sigmoid() -> None:
    router = MLPRouter(6, 4, hidden=8, top_k=2)
    x = _x(seed=3)
    out = router(x)
    assert torch.equal(out.weights, torch.ones(10, 2))  # the value is exactly 1, also with a gradient
    (grad,) = torch.autograd.grad(routed_gates(out, 4).sum(), out.logits)
    s = out.logits.detach().sigmoid()
    expected = (s * (1 - s)) * routed_mask(out, 4)  # d sigmoid / d logit on the selected experts only
    torch.testing.assert_close(grad, expected)
    with torch.no_grad():
        assert torch.equal(router(x).weights, torch.ones(10, 2))


def test_share_slots_keep_the_fewest_reaching_the_threshold() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25], [0.05, 0.9, 0.03, 0.02]])
    idx, keep = share_slots(probs, 0.75)
    assert keep.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    assert idx[0, :2].tolist() == [0, 1] and idx[2, 0].item() == 1
    _, at_least_two = share_slots(probs, 0.1, min_k=2)
    assert at_least_two.sum(-1).tolist() == [2, 2, 2]


def test_top_k_out_of_range_is_a_config_error() -> None:
    router = CentroidRouter(torch.randn(3, 6), top_k=4)
    with pytest.raises(ConfigError, match="top_k"):
        router(_x())


@pytest.mark.parametrize("tokens", [3, 40])  # the few-token batched product and the expert loop
@pytest.mark.parametrize("rule", ["top_k", "dynamic"])
def test_layer_with_every_expert_selected_equals_the_dense_ffn(tokens: int, rule: str) -> None:
    gen = torch.Generator().manual_seed(4)
    h, i, e = 6, 16, 4
    gate, up, down = (
        torch.randn(i, h, generator=gen),
        torch.randn(i, h, generator=gen),
        torch.randn(h, i, generator=gen),
    )
    router = LinearRouter(h, e)
    with torch.no_grad():
        router.proj.weight.zero_()  # equal scores: the dynamic rule at share 1 keeps every expert
    threshold = 1.0 if rule == "dynamic" else None
    ffn = MoefiedFFN.from_dense(gate, up, down, e, F.silu, router, top_k=e, dynamic_threshold=threshold).double()
    dense = DenseFFN.of(ffn).double()
    x = torch.randn(tokens, h, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), dense(x), rtol=0, atol=1e-12)
    assert ffn.last_fraction == 1.0 and ffn.router is not None and ffn.router.top_k == e
    ffn.train()  # the differentiable path (healing) computes the same function
    torch.testing.assert_close(ffn(x), dense(x).detach(), rtol=0, atol=1e-12)


def test_use_router_hands_over_the_layer_settings() -> None:
    gen = torch.Generator().manual_seed(5)
    gate, up, down = (
        torch.randn(8, 6, generator=gen),
        torch.randn(8, 6, generator=gen),
        torch.randn(6, 8, generator=gen),
    )
    ffn = MoefiedFFN.from_dense(gate, up, down, 4, F.silu, None, top_k=3, dynamic_threshold=0.8)
    assert ffn.mode == "dense" and ffn.top_k == 3
    router = CentroidRouter.from_rows(gate, 4)
    ffn.use_router(router)
    assert ffn.mode == "router" and (router.top_k, router.dynamic_threshold) == (3, 0.8)
    ffn.top_k, ffn.dynamic_threshold = 2, None
    assert (router.top_k, router.dynamic_threshold) == (2, None)
    with pytest.raises(ConfigError, match="experts"):
        ffn.use_router(CentroidRouter.from_rows(gate, 2))
