"""A ReLU-fied model MoEfied and saved keeps its FATReLU threshold when it is loaded again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.hub import load_hf_model
from lmbricks.hub.threshold import FATReLU
from lmbricks.moefy import load_moefied, make_config, moefy_model, save_moefied


@pytest.fixture(scope="module")
def relufied(tiny_relufied: Path) -> Path:
    """The tiny Llama ReLU-fied without training (tests/conftest.py)."""
    return tiny_relufied


def test_moefied_relufied_model_round_trips_with_its_threshold(relufied: Path, tmp_path: Path) -> None:
    model, tok = load_hf_model(relufied)  # FATReLU restored on every MLP
    threshold = model.model.layers[0].mlp.act_fn.threshold
    assert threshold > 0
    cfg = make_config(experts=4, top_k=4, split="random", router="centroid")  # every expert: the dense FFN
    info = moefy_model(model, tok, cfg)
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))  # (B, T)
    with torch.no_grad():
        want = model(input_ids=ids).logits
    out = save_moefied(model, tmp_path / "moe", cfg, info.permutations, source=relufied)
    section = json.loads((out / "config.json").read_text())["lmbricks"]
    assert section["activation_threshold"] == pytest.approx(threshold)
    loaded, _ = load_moefied(out)
    act = loaded.model.layers[0].mlp.act
    assert isinstance(act, FATReLU) and act.threshold == pytest.approx(threshold)
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_densify_keeps_the_fatrelu_threshold(relufied: Path, tmp_path: Path) -> None:
    """densify(moefy(m)) with every expert active is m (FATReLU with T, not plain ReLU), through both loaders."""
    from lmbricks.hub.threshold import activation_threshold
    from lmbricks.moefy import densify
    from lmbricks.nn import load_model

    model, tok = load_hf_model(relufied)
    threshold = model.model.layers[0].mlp.act_fn.threshold
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(1))  # (B, T)
    with torch.no_grad():
        want = model(input_ids=ids).logits  # (B, T, V)
    cfg = make_config(experts=4, top_k=4, split="random", router="centroid")
    info = moefy_model(model, tok, cfg)
    moe = save_moefied(model, tmp_path / "moe", cfg, info.permutations, source=relufied)
    dense = densify(moe, tmp_path / "dense")
    assert json.loads((dense / "config.json").read_text())["hidden_act"] == "relu"
    assert activation_threshold(dense) == pytest.approx(threshold)
    back, _ = load_hf_model(dense)
    act = back.model.layers[0].mlp.act_fn
    assert isinstance(act, FATReLU) and act.threshold == pytest.approx(threshold)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
    lm, _ = load_model(dense)  # lmbricks' own model reads the same section
    assert lm.cfg.activation == "fatrelu" and lm.cfg.activation_threshold == pytest.approx(threshold)
    with torch.no_grad():
        torch.testing.assert_close(lm(ids).logits.float(), want, rtol=1e-4, atol=1e-4)
