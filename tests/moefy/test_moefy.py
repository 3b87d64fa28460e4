"""MoEfication identities on the tiny Llama: permutation, sparse runtime, save/load, densify, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.checkpoint import CheckpointReader
from lmbricks.errors import ConfigError
from lmbricks.moefy import (
    check_moefiable,
    densify,
    load_moefied,
    make_config,
    moefied_layers,
    moefy_model,
    save_moefied,
    set_routing,
)
from lmbricks.moefy.routers import dynamic_mask, topk_mask


def _ids(n: int = 2, t: int = 20) -> torch.Tensor:
    return torch.randint(3, 384, (n, t), generator=torch.Generator().manual_seed(0))


def test_permuted_model_with_all_experts_equals_dense(tiny_model) -> None:
    model, tok = tiny_model
    model = model.double()
    with torch.no_grad():
        ref = model(input_ids=_ids()).logits
    cfg = make_config(experts=8, top_k=8, split="kmeans", router="centroid")
    moefy_model(model, tok, cfg)
    assert len(moefied_layers(model)) == 2
    with torch.no_grad():
        set_routing(model, mode="dense")
        dense = model(input_ids=_ids()).logits
        set_routing(model, mode="router", top_k=8)  # sparse runtime, every expert selected
        sparse = model(input_ids=_ids()).logits
    torch.testing.assert_close(dense, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(sparse, ref, rtol=0, atol=1e-10)


def test_sparse_runtime_equals_masked_dense(tiny_model) -> None:
    model, tok = tiny_model
    moefy_model(model, tok, make_config(experts=8, top_k=3, split="random", router="centroid"))
    ffn = moefied_layers(model)[0]
    gen = torch.Generator().manual_seed(1)
    for n_tokens in (1, 3, 5, 40):  # decoding (batched few-token path) and prefill (expert loop)
        x = torch.randn(n_tokens, 32, generator=gen)
        mask = torch.rand(n_tokens, 8, generator=gen) < 0.4
        a = ffn._dense_a(x) * mask.repeat_interleave(ffn.expert_size, dim=1)
        with torch.no_grad():
            torch.testing.assert_close(ffn.sparse_forward(x, mask), ffn._down(a), rtol=1e-5, atol=1e-5)


def test_oracle_and_router_use_k_experts(tiny_model) -> None:
    model, tok = tiny_model
    moefy_model(model, tok, make_config(experts=8, top_k=2, split="kmeans", router="centroid"))
    for mode in ("oracle", "router"):
        set_routing(model, mode=mode, top_k=2)  # type: ignore[arg-type]
        with torch.no_grad():
            model(input_ids=_ids())
        assert all(abs(m.last_fraction - 2 / 8) < 1e-9 for m in moefied_layers(model))


@pytest.mark.parametrize("router", ["mlp", "linear"])
def test_save_load_and_densify_round_trip(
    tiny_model, tiny_llama: Path, tmp_path: Path, fake_texts, router: str
) -> None:
    from transformers import AutoModelForCausalLM

    model, tok = tiny_model
    with torch.no_grad():
        ref = model(input_ids=_ids()).logits
    cfg = make_config(
        experts=4,
        top_k=2,
        split="coactivation",
        router=router,
        router_steps=20,
        calib_chunks=2,
        calib_seq_len=32,
    )
    info = moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b"))
    with torch.no_grad():
        routed = model(input_ids=_ids()).logits
    out = save_moefied(model, tmp_path / "moe", cfg, info.permutations, source=tiny_llama)
    section = json.loads((out / "config.json").read_text())["lmbricks"]
    assert section["kind"] == "moefied" and section["experts"] == 4 and section["top_k"] == 2
    loaded, loaded_tok = load_moefied(out)
    assert loaded_tok is not None
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=_ids()).logits, routed, rtol=0, atol=1e-6)
        # transformers reads the same directory as the (reordered) dense model
        plain = AutoModelForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(plain(input_ids=_ids()).logits, ref, rtol=1e-5, atol=1e-5)
    dense = densify(out, tmp_path / "dense")
    with CheckpointReader(tiny_llama) as a, CheckpointReader(dense) as b:
        assert set(a.keys()) == set(b.keys())
        for key in sorted(a.keys()):
            assert torch.equal(a.get(key), b.get(key)), key
    assert "lmbricks" not in json.loads((dense / "config.json").read_text())
    with pytest.raises(ConfigError):
        save_moefied(model, out, cfg, info.permutations)  # exists, no force


def test_bad_arguments_fail_before_work(tiny_mixtral: Path) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        make_config(experts=4, top_k=5)
    cfg = make_config(experts=5, top_k=2)
    with pytest.raises(ConfigError, match="does not divide"):
        check_moefiable({"model_type": "llama", "intermediate_size": 64}, cfg)
    mixtral = json.loads((tiny_mixtral / "config.json").read_text())
    with pytest.raises(ConfigError, match="not supported"):
        check_moefiable(mixtral, make_config(experts=4, top_k=2))
    with pytest.raises(ConfigError, match="split"):
        make_config(split="metis")


def test_dynamic_mask_is_fewest_experts_reaching_threshold() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    mask = dynamic_mask(probs, 0.75)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, False]]
    assert topk_mask(probs, 1).sum().item() == 2
