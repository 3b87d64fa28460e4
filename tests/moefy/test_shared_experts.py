"""Shared experts in MoEfication (CMoE, arXiv 2502.04416): always-on experts of the most activated neurons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.analysis.ffn import find_ffns
from lmbricks.checkpoint import CheckpointReader
from lmbricks.errors import ConfigError
from lmbricks.moefy import densify, load_moefied, make_config, moefied_layers, moefy_model, save_moefied, set_routing
from lmbricks.moefy.cluster import partition_permutation
from lmbricks.moefy.convert import layer_permutation, partition_layer, shared_neurons
from lmbricks.moefy.selection import routed_mask

CALIB = {"calib_chunks": 2, "calib_seq_len": 32}


def _ids(n: int = 2, t: int = 20) -> torch.Tensor:
    return torch.randint(3, 384, (n, t), generator=torch.Generator().manual_seed(0))  # (B, T)


@pytest.mark.parametrize(("split", "router", "shared"), [("kmeans", "centroid", 1), ("coactivation", "linear", 2)])
def test_all_routed_experts_active_is_the_dense_ffn(
    tiny_model, fake_texts, split: str, router: str, shared: int
) -> None:
    """With every routed expert selected (K = E - S), router and oracle modes compute the dense FFN."""
    model, tok = tiny_model
    model = model.double()
    with torch.no_grad():
        ref = model(input_ids=_ids()).logits  # (B, T, V)
    cfg = make_config(experts=8, top_k=8 - shared, shared_experts=shared, split=split, router=router, **CALIB)
    moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b"))
    layers = moefied_layers(model)
    assert all(m.shared_experts == shared and m.router is not None for m in layers)
    assert all(m.router.num_experts == 8 - shared for m in layers if m.router is not None)
    for mode in ("router", "oracle"):
        set_routing(model, mode=mode, top_k=8 - shared)  # type: ignore[arg-type]
        with torch.no_grad():
            got = model(input_ids=_ids()).logits
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
        assert all(m.last_fraction == 1.0 for m in layers)
    with pytest.raises(ConfigError, match="routed experts"):
        set_routing(model, top_k=9 - shared)


def test_shared_experts_are_always_on_and_k_counts_routed_ones(tiny_model, fake_texts) -> None:
    """At K routed experts a token runs S + K experts, the shared ones among them, in every mode."""
    model, tok = tiny_model
    cfg = make_config(experts=8, top_k=2, shared_experts=2, split="coactivation", router="centroid", **CALIB)
    moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b"))
    ffn = moefied_layers(model)[0]
    x = torch.randn(7, 32, generator=torch.Generator().manual_seed(2))  # (N, H)
    assert ffn.router is not None
    mask = ffn.full_mask(routed_mask(ffn.router(x), ffn.routed_experts))  # (N, E)
    assert mask.shape == (7, 8) and mask[:, :2].all() and (mask.sum(1) == 4).all()
    a = ffn._dense_a(x) * mask.repeat_interleave(ffn.expert_size, dim=1)  # (N, I) the selected neurons only
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), ffn._down(a), rtol=1e-5, atol=1e-5)
    for mode in ("oracle", "router"):
        set_routing(model, mode=mode, top_k=2)  # type: ignore[arg-type]
        with torch.no_grad():
            model(input_ids=_ids())
        assert all(abs(m.last_fraction - 4 / 8) < 1e-9 for m in moefied_layers(model))


def test_shared_neurons_are_the_most_activated() -> None:
    """Planted: neurons 3, 10, 17, 30 are large on every token; they (and only they) become the shared expert."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 32, generator=gen)  # (N, I)
    hot = torch.tensor([3, 10, 17, 30])
    a[:, hot] = 10.0 + torch.rand(200, 4, generator=gen)
    cfg = make_config(experts=8, top_k=2, shared_experts=1)  # n = 4: one shared expert of 4 neurons
    assert torch.equal(shared_neurons(a, cfg), hot)


def test_zero_shared_experts_is_the_previous_conversion(tiny_model, fake_texts) -> None:
    """S = 0: the layer order is the plain partition's and the forward is the routed sparse sum, bit for bit."""
    model, tok = tiny_model
    block = find_ffns(model)[0]
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(3))  # (N, H)
    with torch.no_grad():
        a = block.intermediate(x).float()  # (N, I)
    cfg = make_config(experts=8, top_k=3, shared_experts=0, split="coactivation", router="linear", **CALIB)
    want = partition_permutation(partition_layer(block, a, cfg, 5), 8)
    assert torch.equal(layer_permutation(block, a, cfg, 5), want)
    moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b"))
    ffn = moefied_layers(model)[0]
    assert ffn.router is not None and ffn.router.num_experts == 8
    routed = routed_mask(ffn.router(x), 8)  # (N, E)
    assert ffn.full_mask(routed) is routed
    with torch.no_grad():
        assert torch.equal(ffn(x), ffn.sparse_forward(x, routed))


def test_shared_experts_save_load_and_densify(tiny_model, tiny_llama: Path, tmp_path: Path, fake_texts) -> None:
    """The setting travels in config.json; loading gives the same routed model; densify gives the source back."""
    model, tok = tiny_model
    cfg = make_config(experts=4, top_k=1, shared_experts=1, split="coactivation", router="linear", **CALIB)
    info = moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b"))
    with torch.no_grad():
        routed = model(input_ids=_ids()).logits
    out = save_moefied(model, tmp_path / "moe", cfg, info.permutations, source=tiny_llama)
    section = json.loads((out / "config.json").read_text())["lmbricks"]
    assert section["shared_experts"] == 1 and section["moefy"]["shared_experts"] == 1
    loaded, _ = load_moefied(out)
    assert all(m.shared_experts == 1 and m.routed_experts == 3 for m in moefied_layers(loaded))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=_ids()).logits, routed, rtol=0, atol=1e-6)
    dense = densify(out, tmp_path / "dense")
    with CheckpointReader(tiny_llama) as want, CheckpointReader(dense) as got:
        for key in sorted(want.keys()):
            assert torch.equal(want.get(key), got.get(key)), key


@pytest.mark.parametrize(
    ("fields", "match"),
    [({"experts": 4, "top_k": 1, "shared_experts": 4}, "shared_experts"),
     ({"experts": 4, "top_k": 4, "shared_experts": 1}, "top_k"),
     ({"experts": 4, "top_k": 1, "shared_experts": -1}, "shared_experts")],
)  # fmt: skip
def test_bad_shared_settings_name_the_field(fields: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_config(**fields)
