"""Routers: gradients reach them, noise only in training, expert choice balances, bias balancing."""

from __future__ import annotations

import math

import pytest
import torch

from lmbricks.moe import (
    ExpertChoiceRouter,
    MoEConfig,
    NoisyTopKRouter,
    SigmoidTopKRouter,
    SoftmaxTopKRouter,
    SwitchRouter,
    build_moe,
)

H, INTER, E = 16, 24, 4

ROUTER_CONFIGS = {
    "softmax_topk": dict(top_k=2),
    "noisy_topk": dict(top_k=2, aux_loss="importance_load"),
    "switch": dict(top_k=1),
    "expert_choice": dict(expert_choice_capacity=2.0),
    "dense": dict(),
    "sigmoid_topk": dict(top_k=2, bias_update_rate=1e-2),
}


def _layer(router: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = MoEConfig(
        hidden_size=H,
        intermediate_size=INTER,
        num_experts=E,
        router=router,
        **{**ROUTER_CONFIGS[router], **kw},
    )  # type: ignore[arg-type]
    return build_moe(cfg)


@pytest.mark.parametrize("router", list(ROUTER_CONFIGS))
def test_task_loss_gradient_reaches_router(router: str) -> None:
    layer = _layer(router, aux_loss="none", z_loss=False)
    x = torch.randn(3, 5, H)
    y, aux = layer(x)
    assert aux.losses == {}
    (y * torch.randn_like(y)).sum().backward()
    g = layer.router.gate.weight.grad
    assert g is not None and g.abs().sum() > 0, f"{router}: no gradient to the router from the task loss"
    assert torch.isfinite(g).all()
    if router == "noisy_topk":
        assert layer.router.noise.weight.grad.abs().sum() > 0  # trainable noise learns too


@pytest.mark.parametrize("router", list(ROUTER_CONFIGS))
def test_aux_losses_are_scalars_with_router_gradient(router: str) -> None:
    layer = _layer(router)
    y, aux = layer(torch.randn(20, H))
    assert aux.losses, router
    total = sum(aux.losses.values())
    for v in aux.losses.values():
        assert v.shape == () and v.dtype == torch.float32
    total.backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0
    assert aux.tokens_per_expert.shape == (E,)
    assert aux.router_logits.shape == (20, E)


def test_noisy_gating_deterministic_in_eval_and_noisy_in_training() -> None:
    torch.manual_seed(0)
    router = NoisyTopKRouter(H, 8, top_k=2)
    with torch.no_grad():
        router.gate.weight.normal_(0, 0.1)
    x = torch.randn(64, H)
    router.eval()
    a, b = router(x), router(x)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)
    assert a.noise_std is None and torch.equal(a.logits, a.clean_logits)
    router.train()
    c, d = router(x), router(x)
    assert c.noise_std is not None and (c.noise_std > 0).all()
    assert not torch.equal(c.logits, d.logits)
    assert not torch.equal(c.indices, a.indices)  # the noise changes some selections
    # weights = softmax over the kept noisy logits
    kept = c.logits.gather(1, c.indices)
    assert torch.allclose(c.weights, kept.softmax(-1), atol=1e-6)


def test_softmax_topk_renormalize_switch() -> None:
    torch.manual_seed(0)
    x = torch.randn(10, H)
    r1 = SoftmaxTopKRouter(H, E, top_k=2, renormalize=True)
    r2 = SoftmaxTopKRouter(H, E, top_k=2, renormalize=False)
    r2.load_state_dict(r1.state_dict())
    o1, o2 = r1(x), r2(x)
    assert torch.allclose(o1.weights.sum(-1), torch.ones(10))
    assert torch.equal(o1.indices, o2.indices)
    assert torch.allclose(o2.weights, o2.probs.gather(1, o2.indices))
    s = SwitchRouter(H, E)
    s.load_state_dict(r1.state_dict())
    o3 = s(x)
    assert o3.indices.shape == (10, 1)
    assert torch.equal(o3.indices[:, 0], o1.indices[:, 0])
    assert torch.allclose(o3.weights[:, 0], o3.probs.max(-1).values)  # not renormalised to 1


@pytest.mark.parametrize(("tokens", "capacity"), [(32, 1.0), (30, 2.0), (17, 0.5)])
def test_expert_choice_loads_every_expert_equally(tokens: int, capacity: float) -> None:
    torch.manual_seed(0)
    router = ExpertChoiceRouter(H, E, capacity=capacity)
    with torch.no_grad():
        router.gate.weight.normal_(0, 1.0)  # strongly skewed preferences
    out = router(torch.randn(tokens, H))
    assert out.mask is not None
    per_expert = out.mask.sum(0)
    k = math.floor(tokens * capacity / E + 0.5)  # k = n*c/e, rounded half up
    assert per_expert.tolist() == [k] * E
    assert torch.equal(out.weights > 0, out.mask)
    # the layer computes exactly k tokens per expert as well
    layer = _layer("expert_choice", expert_choice_capacity=capacity)
    layer.router.load_state_dict(router.state_dict())
    _, aux = layer(torch.randn(tokens, H))
    assert aux.tokens_per_expert.tolist() == [k] * E


def test_expert_choice_never_takes_padding() -> None:
    torch.manual_seed(0)
    router = ExpertChoiceRouter(H, E, capacity=1.0)
    mask = torch.ones(16, dtype=torch.bool)
    mask[10:] = False
    out = router(torch.randn(16, H), mask)
    assert not out.mask[10:].any()
    assert out.mask.sum(0).tolist() == [3] * E  # k = 10 * 1 / 4 -> 3, from the 10 real tokens


def test_sigmoid_bias_steers_selection_not_gates() -> None:
    torch.manual_seed(0)
    router = SigmoidTopKRouter(H, E, top_k=2, bias_update_rate=0.1)
    x = torch.randn(50, H)
    before = router(x)
    with torch.no_grad():
        router.bias[3] = 10.0  # expert 3 always selected
    after = router(x)
    assert (after.indices == 3).any(-1).all()
    # gates are sigmoid scores of the selected experts (renormalised), never include the bias
    scores = after.logits.sigmoid().gather(1, after.indices)
    assert torch.allclose(after.weights, scores / scores.sum(-1, keepdim=True))
    assert torch.equal(before.logits, after.logits)


def test_sigmoid_update_bias_moves_load_toward_balance() -> None:
    torch.manual_seed(0)
    router = SigmoidTopKRouter(H, E, top_k=2, bias_update_rate=0.01)
    with torch.no_grad():
        router.gate.weight.normal_(0, 0.3)
        router.gate.weight[0, 0] = 3.0  # expert 0 strongly preferred by tokens with x[0] > 0
    x = torch.randn(400, H)
    x[:, 0] = x[:, 0].abs() + 0.5

    def load() -> torch.Tensor:
        return torch.bincount(router(x).indices.flatten(), minlength=E).float()

    with torch.no_grad():
        load0 = load()
        for _ in range(200):
            router.update_bias(load())
        load1 = load()
    assert load0[0] > 0.9 * 400  # nearly every token took expert 0 before balancing
    assert router.bias[0] < 0  # the overloaded expert's bias went down
    assert load1.max() < 0.75 * load0.max()
    assert load1.std() < load0.std() / 2
    # the layer exposes the same step from MoEAux statistics
    layer = _layer("sigmoid_topk")
    with torch.no_grad():
        _, aux = layer(x)
    layer.update_router_bias(aux.tokens_per_expert)
    assert layer.router.bias.abs().sum() > 0
