"""bench/moefy.py's ReLU-fied arm: the FATReLU threshold restored, its zeros, the fused anchor, zero-skip choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from moefy_relufied_workers import relufied_speeds, zero_fraction
from moefy_workers import FATReLU, _fused_forward, activation_threshold, arm_k, load_dense, set_threshold

from lmbricks.hub import load_hf_model
from lmbricks.nn import load_model


@pytest.fixture(scope="module")
def relufied(tiny_relufied: Path) -> Path:
    """The tiny Llama ReLU-fied without training (tests/conftest.py)."""
    return tiny_relufied


def _ids() -> torch.Tensor:
    return torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))  # (B, T)


def test_load_dense_restores_the_threshold(relufied: Path, tiny_llama: Path) -> None:
    """load_hf_model restores FATReLU (transformers alone computes plain relu): logits equal lmbricks' exact LM."""
    t = activation_threshold(relufied)
    assert t > 0 and activation_threshold(tiny_llama) == 0.0
    exact, _ = load_model(relufied)
    assert exact.cfg.activation == "fatrelu" and exact.cfg.activation_threshold == pytest.approx(t)
    ours, hf = load_dense(relufied)[0], load_hf_model(relufied)[0]
    plain = load_hf_model(relufied)[0]
    for mlp in plain.model.layers:  # what from_pretrained alone computes
        mlp.mlp.act_fn = torch.nn.ReLU()
    with torch.no_grad():
        want = exact(_ids()).logits
        got, by_hub, relu = (m(input_ids=_ids()).logits for m in (ours, hf, plain))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(by_hub, want, rtol=1e-4, atol=1e-4)
    assert (relu - want).abs().max() > 1e-3  # the threshold matters: plain relu is another model


def test_zero_fraction_counts_the_gate_zeros(relufied: Path) -> None:
    model, _ = load_dense(relufied)
    ids = _ids()
    block = model.model.layers[0].mlp
    want = [0, 0]
    for layer in model.model.layers:  # an independent count: the gate's FATReLU on each layer's input
        h = {}
        handle = layer.mlp.register_forward_pre_hook(lambda _m, inp, h=h: h.setdefault("x", inp[0]))
        with torch.no_grad():
            model(input_ids=ids)
        handle.remove()
        g = layer.mlp.gate_proj(h["x"])
        a = torch.where(g > activation_threshold(relufied), g, torch.zeros(()))
        want[0] += int((a == 0).sum())
        want[1] += a.numel()
    assert isinstance(block.act_fn, FATReLU)
    assert zero_fraction(model, {"x": ids}) == pytest.approx(want[0] / want[1])
    assert want[0] / want[1] > 0.6  # the threshold's zeros, not ReLU's half


def test_fused_anchor_computes_the_relufied_ffn(relufied: Path) -> None:
    from moe import FusedSwiGLU

    mlp = load_dense(relufied)[0].model.layers[1].mlp
    fused = FusedSwiGLU.of(mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    x = torch.randn(5, mlp.gate_proj.in_features, generator=torch.Generator().manual_seed(1))  # (N, H)
    swiglu = fused(x)
    fused.forward = _fused_forward(fused, mlp.act_fn)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), mlp(x), rtol=1e-5, atol=1e-6)
        assert (swiglu - mlp(x)).abs().max() > 1e-4  # SiLU's fused FFN is another function


def test_set_threshold_reaches_moefied_layers(relufied: Path) -> None:
    from lmbricks.moefy import make_config, moefied_layers, moefy_model

    model, tok = load_dense(relufied)
    moefy_model(model, tok, make_config(experts=4, top_k=2, split="kmeans", router="centroid"))
    layers = moefied_layers(model)
    set_threshold(model, 0.25)
    assert all(isinstance(m.act, FATReLU) and m.act.threshold == 0.25 for m in layers)
    assert all(m.skip_zeros for m in layers)
    set_threshold(model, 0.0)  # 0: unchanged
    assert all(m.act.threshold == 0.25 for m in layers)


def test_arm_names_and_zero_skip_choice() -> None:
    assert arm_k("K=8") == (8, False) and arm_k("K=16+zs") == (16, True)
    t = {
        "ffn_prefill": {"dense": 10.0, "dense_fused": 8.0, "K=2": 4.0, "K=2+zs": 2.0, "K=4": 5.0, "K=4+zs": 6.0},
        "model_decode": {"dense": 3.0, "K=2": 1.5, "K=2+zs": 2.0, "K=4": 3.0, "K=4+zs": 3.0},
    }
    s = relufied_speeds(t, [2, 4])
    assert s["anchors"] == {"ffn_prefill": "dense_fused", "model_decode": "dense"}
    assert s["ffn_prefill"]["K=2_speedup"] == 4.0 and s["ffn_prefill"]["K=2_speedup_no_zs"] == 2.0
    assert s["ffn_prefill"]["K=4_speedup"] == 8.0 / 5.0
    assert s["zero_skip_used"]["ffn_prefill"] == {"K=2": True, "K=4": False}
    assert s["model_decode"]["K=2_speedup"] == 2.0 and s["zero_skip_used"]["model_decode"]["K=2"] is False
