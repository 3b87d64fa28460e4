"""TEAL identities: threshold 0 is dense bit for bit, each projection input is masked, calibration hits its target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmbricks.errors import ConfigError
from lmbricks.nn.ffn import gate_activation
from lmbricks.nn.load import load_model
from lmbricks.nn.model import KVCache
from lmbricks.sparsify.cats import threshold_mask
from lmbricks.sparsify.evaluate import SparsifyEvalConfig, run_sparsify_eval
from lmbricks.sparsify.teal import Teal, calibrate_teal, teal_sites


def _ids(t: int = 10) -> torch.Tensor:
    return torch.randint(3, 384, (1, t), generator=torch.Generator().manual_seed(0))  # (1, T)


def test_threshold_zero_is_the_dense_model_bit_for_bit(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    sites = len(teal_sites(model))
    assert sites == 4 * len(model.layers)
    with torch.no_grad():
        cache = KVCache(model.cfg.num_layers)
        dense = [model(_ids(), cache=cache).logits, model(torch.tensor([[7]]), cache=cache).logits]
        with Teal(model, [0.0] * sites):
            cache = KVCache(model.cfg.num_layers)
            teal = [model(_ids(), cache=cache).logits, model(torch.tensor([[7]]), cache=cache).logits]
        after = model(_ids()).logits
    assert all(torch.equal(a, b) for a, b in zip(dense, teal, strict=True))
    assert torch.equal(after, dense[0])  # the hooks are gone


def test_the_ffn_inputs_are_thresholded(tiny_llama: Path) -> None:
    """Under TEAL a block's FFN computes down(mask_d(act(gate x') * up x')) with x' = mask_f(x)."""
    model, _ = load_model(tiny_llama, hf_fallback=False)
    model = model.double()
    ffn = model.layers[0].ffn
    x = torch.randn(5, ffn.gate_up.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t_ffn, t_down = 0.6, 0.02
    thresholds = [0.0] * len(teal_sites(model))
    thresholds[2], thresholds[3] = t_ffn, t_down  # layer 0: attention, o, FFN, down
    half = ffn.gate_up.out_features // 2
    xm = threshold_mask(x, t_ffn)
    gate, up = xm @ ffn.gate_up.weight[:half].T, xm @ ffn.gate_up.weight[half:].T  # (N, I)
    want = threshold_mask(gate_activation(gate, ffn.activation, ffn.threshold) * up, t_down) @ ffn.down.weight.T
    with torch.no_grad():
        plain, plain1 = ffn(x)[0], model.layers[1].ffn(x)[0]
        with Teal(model, thresholds):
            got, _ = ffn(x)
            dense, _ = model.layers[1].ffn(x)  # layer 1's thresholds are 0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(got, plain)
    assert torch.equal(dense, plain1)


def test_calibrated_thresholds_give_the_target_sparsity(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    blocks = torch.randint(3, 384, (4, 32), generator=torch.Generator().manual_seed(1))
    for target in (0.25, 0.5):
        thresholds = calibrate_teal(model, blocks, target)
        assert len(thresholds) == 8 and all(t > 0 for t in thresholds)
        with torch.no_grad(), Teal(model, thresholds, count=True) as teal:
            for row in blocks:
                model(row[None])
        zeros = teal.zero_fractions()
        assert zeros[0] == pytest.approx(target, abs=1e-3)  # layer 0's attention input: the calibration inputs
        assert all(z == pytest.approx(target, abs=0.1) for z in zeros[1:])  # later inputs moved with the masks


def test_evaluate_teal_keep_one_is_dense(tiny_llama: Path, tmp_path: Path) -> None:
    text = tmp_path / "held.txt"
    text.write_text(" ".join(["the cat sat on a red mat and the dog runs fast"] * 300))
    cfg = SparsifyEvalConfig(
        model=str(tiny_llama), out=tmp_path / "t", method="teal", keep=[1.0, 0.5], text_files=[text], sequences=1,
        prompt_tokens=16, continuation_tokens=8, calibration_tokens=64, precision="fp32",
    )  # fmt: skip
    result = run_sparsify_eval(cfg)
    assert result.ppl_change["keep=1"]["held"] == 0.0  # sparsity 0: every threshold 0, the dense model
    assert result.ppl_change["keep=0.5"]["held"] != 0.0
    assert len(result.thresholds["keep=0.5"]) == 8 and all(t > 0 for t in result.thresholds["keep=0.5"])
    assert set(result.decode_tok_s) == {"dense", "keep=1", "keep=0.5"}  # decoding runs TEAL's kernel, timed
    assert all(v > 0 for v in result.decode_tok_s.values()) and set(result.ffn_decode_ms) == set(result.decode_tok_s)
    assert json.loads((tmp_path / "t" / "results.json").read_text())["settings"]["method"] == "teal"


def test_bad_uses_are_refused(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    with pytest.raises(ConfigError, match="thresholds"):
        Teal(model, [0.1])
    with pytest.raises(ConfigError, match="sparsity"):
        calibrate_teal(model, _ids()[None], 1.0)
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with pytest.raises(ConfigError, match="lmbricks' LM"):
        teal_sites(hf)
