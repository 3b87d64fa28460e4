"""Zero-skipping in the MoEfied runtime: bit for bit the dense FFN on inputs with exact zeros.

The exact-arithmetic tests use small integer weights and inputs, so every product and sum is
exact in float32 and no summation order can hide a wrong skip: dropping one live neuron, or
keeping one of an unselected expert, changes the result.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lmbricks.moefy import MoefiedFFN, load_moefied, make_config, moefied_layers, moefy_model, save_moefied, set_routing
from lmbricks.moefy.router_base import RouterFit
from lmbricks.moefy.routers import MOEFY_ROUTERS
from lmbricks.moefy.zeroskip import zeroes_nonpositive
from lmbricks.testing import save_tiny_model, tiny_llama_config

E, H, WIDTH = 8, 16, 64


def _ints(*shape: int, seed: int) -> torch.Tensor:
    return torch.randint(-2, 3, shape, generator=torch.Generator().manual_seed(seed)).float()


def _ffn(act: nn.Module, top_k: int) -> tuple[MoefiedFFN, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    gate, up, down = _ints(WIDTH, H, seed=1), _ints(WIDTH, H, seed=2), _ints(H, WIDTH, seed=3)
    cfg = make_config(experts=E, top_k=top_k, split="kmeans", router="centroid")
    router = MOEFY_ROUTERS["centroid"].fit(RouterFit(gate, None, None, cfg, 0))
    return MoefiedFFN.from_dense(gate, up, down, E, act, router, top_k).eval(), (gate, up, down)


@pytest.mark.parametrize("tokens", [1, 3, 37])
@pytest.mark.parametrize("act", [nn.ReLU(), nn.Threshold(2.0, 0.0)], ids=["relu", "fatrelu2"])
def test_zero_skipping_equals_dense_bit_for_bit(tokens: int, act: nn.Module) -> None:
    ffn, (gate, up, down) = _ffn(act, top_k=E)
    assert ffn.skip_zeros
    x = _ints(tokens, H, seed=4)
    a = act(x @ gate.T)  # (N, I)
    assert 0.3 < float((a == 0).float().mean()) < 0.95  # exact zeros to skip, live neurons to keep
    reference = (a * (x @ up.T)) @ down.T  # (N, H) the dense FFN
    with torch.no_grad():
        skipped = ffn(x)
        ffn.mode = "dense"
        dense = ffn(x)
    assert torch.equal(skipped, reference)
    assert torch.equal(dense, reference)


@pytest.mark.parametrize("tokens", [2, 41])
def test_zero_skipping_keeps_the_routed_selection(tokens: int) -> None:
    ffn, _ = _ffn(nn.ReLU(), top_k=3)
    x = _ints(tokens, H, seed=5)
    with torch.no_grad():
        skipped = ffn(x)
        ffn.skip_zeros = False
        plain = ffn(x)
        ffn.mode = "dense"
        dense = ffn(x)
    assert torch.equal(skipped, plain)
    assert not torch.equal(plain, dense)  # K < E: the selection matters, and is kept


def test_zero_skipping_follows_weight_updates() -> None:
    ffn, _ = _ffn(nn.ReLU(), top_k=E)
    x = _ints(2, H, seed=6)
    with torch.no_grad():
        ffn(x)  # caches the up rows
        ffn.w_up.mul_(2)
        twice = ffn(x)
        ffn.mode = "dense"
        assert torch.equal(twice, ffn(x))


def test_which_activations_skip() -> None:
    from transformers.activations import ACT2FN

    assert zeroes_nonpositive(ACT2FN["relu"]) and zeroes_nonpositive(ACT2FN["relu2"])
    assert not zeroes_nonpositive(ACT2FN["silu"]) and not zeroes_nonpositive(ACT2FN["gelu"])
    ffn, _ = _ffn(nn.SiLU(), top_k=E)
    assert not ffn.skip_zeros


@pytest.mark.parametrize("hidden_act", ["relu", "relu2"])
def test_relu_models_moefy_and_round_trip(tmp_path: Path, hidden_act: str, fake_texts) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = save_tiny_model(tmp_path / "src", tiny_llama_config(hidden_act=hidden_act), seed=0)
    model = AutoModelForCausalLM.from_pretrained(src).eval().double()
    tok = AutoTokenizer.from_pretrained(src)
    ids = torch.randint(3, 384, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    cfg = make_config(experts=8, top_k=8, calib_chunks=1, calib_seq_len=32)
    info = moefy_model(model, tok, cfg, texts_of=fake_texts)
    assert all(layer.skip_zeros for layer in moefied_layers(model))
    with torch.no_grad():
        routed = model(input_ids=ids).logits
    torch.testing.assert_close(routed, ref, rtol=1e-10, atol=1e-10)
    out = save_moefied(model.float(), tmp_path / "moe", cfg, info.permutations, tokenizer=tok)
    loaded, _ = load_moefied(out)
    assert all(layer.skip_zeros for layer in moefied_layers(loaded))
    set_routing(loaded, skip_zeros=False)
    assert not any(layer.skip_zeros for layer in moefied_layers(loaded))


def test_docs_zero_skipping_table_equals_its_json() -> None:
    import json
    import re

    root = Path(__file__).resolve().parents[2] / "docs"
    text = (root / "emergent-bricks.md").read_text(encoding="utf-8")
    run = json.loads((root / "bench" / "moefy-zeroskip-2026-12-07.json").read_text())
    lines = text.splitlines()
    start = lines.index("| arm (speedup against dense) | FFN prefill 4 x 256 | FFN decode 1 token | model decode |")
    rows = [line.strip("|").split("|") for line in lines[start + 2 : start + 7]]
    for arm, *cells in rows:
        key = arm.strip().strip("`")
        for cell, phase in zip(cells, ("ffn_prefill", "ffn_decode", "model_decode"), strict=True):
            quoted = float(re.match(r"\s*(\d+\.\d+)x", cell).group(1))  # type: ignore[union-attr]
            assert quoted == pytest.approx(run[phase][f"{key}_speedup"], abs=0.005 + 1e-9), (key, phase)
