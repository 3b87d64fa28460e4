"""CATS identities: threshold 0 is dense bit for bit, the kernel equals the masked FFN, calibration hits its target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.nn.ffn import GatedFFN, gate_activation
from lmbricks.nn.load import load_model
from lmbricks.nn.model import KVCache
from lmbricks.sparsify.cats import Cats, calibrate, cats_decode, cats_dense, quantile_threshold, threshold_mask


def test_threshold_mask() -> None:
    a = torch.tensor([-0.3, 0.05, 0.2, -0.1, 0.0])
    assert torch.equal(threshold_mask(a, 0.1), torch.tensor([-0.3, 0.0, 0.2, 0.0, 0.0]))
    assert torch.equal(threshold_mask(a, 0.0), a)


def test_quantile_threshold_zeroes_the_fraction() -> None:
    m = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    for s in (0.0, 0.25, 0.5, 0.9):
        t = quantile_threshold(m, s)
        assert int((m <= t).sum()) == round(s * 1000) or s == 0.0
    assert quantile_threshold(m, 0.0) == 0.0
    with pytest.raises(ConfigError, match="sparsity"):
        quantile_threshold(m, 1.0)


def test_threshold_zero_is_the_dense_model_bit_for_bit(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    ids = torch.randint(3, 384, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = KVCache(model.cfg.num_layers)
        dense = [model(ids, cache=cache).logits, model(torch.tensor([[7]]), cache=cache).logits]
        with Cats(model, [0.0] * len(model.layers)):
            cache = KVCache(model.cfg.num_layers)
            cats = [model(ids, cache=cache).logits, model(torch.tensor([[7]]), cache=cache).logits]
    assert all(torch.equal(a, b) for a, b in zip(dense, cats, strict=True))
    assert all(isinstance(b.ffn, GatedFFN) for b in model.layers)  # restored


@pytest.mark.parametrize("tokens", [1, 3])
def test_kernel_equals_the_masked_dense_ffn(tokens: int) -> None:
    torch.manual_seed(0)
    ffn = GatedFFN(16, 48).double()
    x = torch.randn(1, tokens, 16, dtype=torch.float64)
    with torch.no_grad():
        half = 48
        t = quantile_threshold(gate_activation(x @ ffn.gate_up.weight[:half].T, "swiglu").abs().flatten(), 0.6)
        ref = cats_dense(ffn, x, t)
        got = cats_decode(ffn, ffn.down.weight.t().contiguous(), x, t)
        # the reference written out: neurons whose |silu(gate)| <= t contribute nothing
        w = ffn.gate_up.weight
        a = gate_activation(x @ w[:half].T, "swiglu")
        manual = ((a.abs() > t) * a * (x @ w[half:].T)) @ ffn.down.weight.T
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ref, manual, rtol=0, atol=1e-12)
    assert not torch.allclose(ref, ffn(x)[0])  # the threshold did zero something


def test_calibrated_thresholds_give_the_target_sparsity(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    blocks = torch.randint(3, 384, (4, 32), generator=torch.Generator().manual_seed(1))
    for target in (0.5, 0.75):
        thresholds = calibrate(model, blocks, target)
        assert len(thresholds) == 2 and all(t > 0 for t in thresholds)
        with torch.no_grad(), Cats(model, thresholds, count=True) as c:
            model(blocks)
        # layer 0 sees exactly the calibration inputs; layer 1's inputs moved with layer 0's threshold
        assert c.zero_fractions()[0] == pytest.approx(target, abs=1e-3)
        assert c.zero_fractions()[1] == pytest.approx(target, abs=0.05)


def test_decoding_through_the_kernel_matches_masked_dense(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    model = model.double()
    ids = torch.randint(3, 384, (1, 8), generator=torch.Generator().manual_seed(2))
    thresholds = calibrate(model, ids, 0.5)
    outs = []
    for count in (False, True):  # count=True forces the masked dense path everywhere
        with torch.no_grad(), Cats(model, thresholds, count=count):
            cache = KVCache(model.cfg.num_layers)
            model(ids, cache=cache)
            outs.append(model(torch.tensor([[11]]), cache=cache).logits)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-10)


def test_bad_uses_are_refused(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    with pytest.raises(ConfigError, match="thresholds"):
        Cats(model, [0.1])
    with pytest.raises(ConfigError, match="sparsity"):
        calibrate(model, torch.tensor([[4, 5]]), 1.5)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with pytest.raises(ConfigError, match="lmbricks' LM"):
        Cats(hf, [0.1, 0.1])
