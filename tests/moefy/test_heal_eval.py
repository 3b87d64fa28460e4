"""Healing lowers the KL to the dense model; evaluation and timing helpers run on a tiny model."""

from __future__ import annotations

import copy

import torch

from lmbricks.moefy import make_config, moefied_layers, moefy_model, set_routing
from lmbricks.moefy.evaluate import ppl_curve, time_ffn
from lmbricks.moefy.heal import HealConfig, heal, kl_to_teacher


def test_healing_reduces_kl(tiny_model, fake_texts) -> None:
    model, tok = tiny_model
    teacher = copy.deepcopy(model)
    cfg = make_config(
        experts=8, top_k=2, split="kmeans", router="mlp", router_steps=30, calib_chunks=2, calib_seq_len=32
    )
    moefy_model(model, tok, cfg, texts_of=fake_texts, domains=("a", "b"))
    blocks = torch.randint(3, 384, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(kl_to_teacher(model(input_ids=blocks).logits, teacher(input_ids=blocks).logits))
    stats = heal(model, teacher, blocks, HealConfig(max_tokens=40 * 64, max_minutes=None, lr=3e-3, batch_size=2))
    with torch.no_grad():
        after = float(kl_to_teacher(model(input_ids=blocks).logits, teacher(input_ids=blocks).logits))
    assert stats.steps == 40 and stats.tokens == 40 * 64
    assert after < 0.7 * before
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_ppl_curve_and_ffn_timing(tiny_model) -> None:
    model, tok = tiny_model
    dense_ffn = copy.deepcopy(model.model.layers[0].mlp)
    moefy_model(model, tok, make_config(experts=4, top_k=2, split="random", router="centroid"))
    chunks = {"x": torch.randint(3, 384, (2, 16), generator=torch.Generator().manual_seed(1))}
    result = ppl_curve(model, chunks, [2, 4], ("oracle", "router"))
    full = result.find("oracle", 4)
    assert full is not None and abs(full.ppl["x"] - result.dense_ppl["x"]) < 1e-3 * result.dense_ppl["x"]
    assert [m.mode for m in moefied_layers(model)] == ["router", "router"]  # settings restored
    timing = time_ffn(dense_ffn, moefied_layers(model)[0], 32, [2, 4], tokens=8, rounds=2)
    assert timing["K=2_ms"] > 0 and timing["dense_ms"] > 0
    set_routing(model, mode="oracle")
