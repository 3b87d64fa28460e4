"""MoELayer identities: 1 expert = dense FFN, k = E with identical experts = dense FFN, capacity,
padding, shared expert, shapes and dtypes."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from lmbricks.moe import Experts, MoEConfig, MoELayer, SharedExpert, build_moe, build_router

H, INTER = 16, 40


def _dense_mlp(seed: int = 0) -> LlamaMLP:
    torch.manual_seed(seed)
    mlp = LlamaMLP(LlamaConfig(hidden_size=H, intermediate_size=INTER, num_attention_heads=4, hidden_act="silu"))
    for p in mlp.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return mlp


def _layer_from_dense(mlp: LlamaMLP, router: str = "softmax_topk", **cfg: object) -> MoELayer:
    config = MoEConfig(hidden_size=H, intermediate_size=INTER, router=router, **cfg)  # type: ignore[arg-type]
    torch.manual_seed(1)
    layer = MoELayer(router=build_router(config), experts=Experts.from_dense(mlp, config.num_experts), config=config)
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1.0)
    return layer


def test_one_expert_moe_equals_dense_ffn() -> None:
    mlp = _dense_mlp()
    layer = _layer_from_dense(mlp, num_experts=1, top_k=1)
    x = torch.randn(2, 7, H)
    y, aux = layer(x)
    assert torch.allclose(y, mlp(x), atol=1e-5)
    assert aux.tokens_per_expert.tolist() == [14]


@pytest.mark.parametrize("router", ["softmax_topk", "dense", "noisy_topk"])
def test_topk_equal_e_identical_experts_equals_dense_ffn(router: str) -> None:
    mlp = _dense_mlp()
    cfg = dict(num_experts=4, top_k=4, renormalize=True)
    layer = _layer_from_dense(mlp, router, **cfg)
    layer.train()  # noise on: the gates still sum to one
    x = torch.randn(3, 5, H)
    y, _ = layer(x)
    assert torch.allclose(y, mlp(x), atol=1e-5)


def test_from_dense_accepts_fused_and_tuple_layouts() -> None:
    mlp = _dense_mlp()
    a = Experts.from_dense(mlp, 3)
    b = Experts.from_dense((mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight), 3)
    fused = torch.nn.Module()
    fused.gate_up = torch.nn.Linear(H, 2 * INTER, bias=False)
    fused.down = mlp.down_proj
    with torch.no_grad():
        fused.gate_up.weight.copy_(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))
    c = Experts.from_dense(fused, 3)
    for other in (b, c):
        assert torch.equal(a.gate_up, other.gate_up) and torch.equal(a.down, other.down)
    w = a.expert_linear_weights(2)
    assert torch.equal(w["gate_proj"], mlp.gate_proj.weight) and torch.equal(w["down_proj"], mlp.down_proj.weight)


def test_infinite_capacity_equals_dropless() -> None:
    torch.manual_seed(0)
    dropless = build_moe(MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4))
    capped = build_moe(MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4, capacity_factor=1e6))
    capped.load_state_dict(dropless.state_dict())
    x = torch.randn(50, H)
    (y1, a1), (y2, a2) = dropless(x), capped(x)
    assert torch.equal(y1, y2)
    assert float(a2.dropped_fraction) == 0.0
    assert torch.equal(a1.tokens_per_expert, a2.tokens_per_expert)


def _expected_keep(
    indices: torch.Tensor, weights: torch.Tensor, num_experts: int, cap: int, policy: str
) -> torch.Tensor:
    """The capacity rule written out pair by pair: each expert keeps its ``cap`` first pairs, ordered
    by (slot, token) for "position" and by (-weight, slot, token) for "probability"."""
    t, k = indices.shape
    weights = weights.detach()
    keep = torch.zeros(t, k, dtype=torch.bool)
    for e in range(num_experts):
        pairs = [(j, i) for j in range(k) for i in range(t) if int(indices[i, j]) == e]
        if policy == "probability":
            pairs.sort(key=lambda p: (-float(weights[p[1], p[0]]), p[0], p[1]))
        for j, i in pairs[:cap]:
            keep[i, j] = True
    return keep


@pytest.mark.parametrize("policy", ["position", "probability"])
def test_dropped_pairs_contribute_zero(policy: str) -> None:
    torch.manual_seed(0)
    cfg = MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4, capacity_factor=0.5, drop_policy=policy)  # type: ignore[arg-type]
    layer = build_moe(cfg)
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1.0)
    x = torch.randn(40, H)
    y, aux = layer(x)
    cap = -(-40 * 2 // 4 // 2)  # ceil(T*k/E * 0.5) = 10
    assert (aux.tokens_per_expert <= cap).all()
    assert 0 < float(aux.dropped_fraction) < 1
    assert float(aux.dropped_fraction) == pytest.approx(1 - aux.tokens_per_expert.sum().item() / 80)
    # the kept pairs are the ones the rule keeps, computed here from the router's choices
    r = layer.router(x)
    keep = _expected_keep(r.indices, r.weights, 4, cap, policy)
    assert torch.equal(aux.indices >= 0, keep)
    ref = layer.experts(x, r.weights, r.indices, keep)
    assert torch.allclose(y, ref, atol=1e-6)


def test_drop_policy_decides_which_tokens_lose_all_their_pairs() -> None:
    """Every token routes to experts 0 and 1 (positive inputs, gate rows 2 and 3 negative), so with a
    capacity of 10 pairs per expert most tokens lose both pairs; the two policies keep different ones."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, H, generator=g) + 0.1  # (T, H), all positive
    kept = {}
    for policy in ("position", "probability"):
        cfg = MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4, capacity_factor=0.5, drop_policy=policy)  # type: ignore[arg-type]
        torch.manual_seed(0)
        layer = build_moe(cfg)
        with torch.no_grad():
            w = torch.rand(4, H, generator=torch.Generator().manual_seed(4))
            w[2:] *= -1
            layer.router.gate.weight.copy_(w)
        y, aux = layer(x)
        r = layer.router(x)
        assert set(r.indices.unique().tolist()) == {0, 1}
        keep = _expected_keep(r.indices, r.weights, 4, 10, policy)
        assert torch.equal(aux.indices >= 0, keep), policy
        lost = ~keep.any(-1)  # (T,) tokens with every pair dropped
        assert int(lost.sum()) >= 10
        assert y[lost].abs().max() == 0 and bool((y[~lost].abs().amax(-1) > 0).all())
        kept[policy] = keep
    assert not torch.equal(kept["position"], kept["probability"])


def test_padding_mask_excludes_tokens_from_output_losses_and_stats() -> None:
    torch.manual_seed(0)
    layer = build_moe(
        MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4, shared_expert_intermediate_size=8)
    )
    x = torch.randn(2, 6, H)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    y, aux = layer(x, mask)
    real = x[mask]  # (6, H)
    y_real, aux_real = layer(real)
    assert torch.allclose(y[mask], y_real, atol=1e-6)
    assert y[~mask].abs().max() == 0
    assert torch.equal(aux.tokens_per_expert, aux_real.tokens_per_expert)
    for name in ("switch", "z"):
        assert torch.allclose(aux.losses[name], aux_real.losses[name], atol=1e-6)
    assert (aux.indices[~mask.reshape(-1)] == -1).all()


def test_shared_expert_is_added_with_sigmoid_gate() -> None:
    torch.manual_seed(0)
    cfg = MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4, shared_expert_intermediate_size=24)
    layer = build_moe(cfg)
    assert isinstance(layer.shared_expert, SharedExpert)
    x = torch.randn(9, H)
    y, _ = layer(x)
    r = layer.router(x)
    routed = layer.experts(x, r.weights, r.indices)
    s = layer.shared_expert
    shared = torch.sigmoid(s.gate(x)) * s.down_proj(torch.nn.functional.silu(s.gate_proj(x)) * s.up_proj(x))
    assert torch.allclose(y, routed + shared, atol=1e-6)


def test_shapes_dtypes_and_inference_skips_losses() -> None:
    torch.manual_seed(0)
    layer = build_moe(MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4)).to(torch.bfloat16)
    x = torch.randn(2, 3, H, dtype=torch.bfloat16)
    y, aux = layer(x)
    assert y.shape == x.shape and y.dtype == torch.bfloat16
    assert aux.router_logits.dtype == torch.float32 and aux.indices.shape == (6, 2)
    layer.eval()
    with torch.no_grad():
        _, aux_inf = layer(x)
    assert aux_inf.losses == {}
    layer.always_losses = True
    with torch.no_grad():
        _, aux_inf = layer(x)
    assert set(aux_inf.losses) == {"switch", "z"}


def test_decode_touches_only_routed_experts() -> None:
    torch.manual_seed(0)
    layer = build_moe(MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=8, top_k=1))
    x = torch.randn(1, H)
    y, aux = layer(x)
    (y**2).sum().backward()
    touched = aux.tokens_per_expert > 0
    assert int(touched.sum()) == 1
    per_expert = layer.experts.gate_up.grad.abs().sum((1, 2))
    assert torch.equal(per_expert > 0, touched)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_grouped_matches_loop() -> None:
    """Both bf16 implementations against an fp32 reference with the same (bf16-rounded) weights and
    input: output and gradient within bf16 rounding (relative Frobenius error 2e-2, about 5 bf16
    ulps; 0.6% / 0.7% measured for the loop on CPU), and against each other."""
    import copy

    torch.manual_seed(0)
    layer = build_moe(MoEConfig(hidden_size=64, intermediate_size=128, num_experts=8)).cuda().to(torch.bfloat16)
    x = torch.randn(512, 64, device="cuda", dtype=torch.bfloat16)
    ref_layer = copy.deepcopy(layer).float()
    ref_layer.experts.impl = "loop"  # type: ignore[assignment]
    y32, _ = ref_layer(x.float())
    y32.square().sum().backward()
    ref_y, ref_grad = y32.detach(), ref_layer.experts.gate_up.grad.detach()
    outs = []
    for impl in ("loop", "grouped"):
        layer.experts.impl = impl  # type: ignore[assignment]
        layer.zero_grad(set_to_none=True)
        y, _ = layer(x)
        y.float().square().sum().backward()
        outs.append((y.float(), layer.experts.gate_up.grad.float()))
    for y, grad in outs:
        assert float((y - ref_y).norm() / ref_y.norm()) < 2e-2
        assert float((grad - ref_grad).norm() / ref_grad.norm()) < 2e-2
    assert torch.allclose(outs[0][0], outs[1][0], atol=3e-2, rtol=3e-2)
    assert float((outs[0][1] - outs[1][1]).norm() / ref_grad.norm()) < 2e-2
