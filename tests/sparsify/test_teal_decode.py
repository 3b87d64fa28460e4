"""TEAL's decoding path: prefill equals TEAL's masks bit for bit, one-token steps equal them to float tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model
from lmbricks.nn.model import KVCache
from lmbricks.sparsify.teal import Teal, calibrate_teal, teal_sites
from lmbricks.sparsify.teal_decode import TealDecode, TealLinear, transposed_weights


def _ids(t: int = 12) -> torch.Tensor:
    return torch.randint(3, 384, (1, t), generator=torch.Generator().manual_seed(0))  # (1, T)


def _decode(model: torch.nn.Module, steps: int) -> list[torch.Tensor]:
    """Logits of a 12-token prompt, then of ``steps`` greedy one-token steps with the KV cache."""
    cache = KVCache(model.cfg.num_layers)
    out = [model(_ids(), cache=cache).logits]
    for _ in range(steps):
        out.append(model(out[-1][:, -1:].argmax(-1), cache=cache).logits)  # (1, 1, V)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoding_equals_teals_masks(tiny_llama: Path, dtype: torch.dtype) -> None:
    model, _ = load_model(tiny_llama, dtype=dtype, hf_fallback=False)
    with torch.no_grad():
        thresholds = calibrate_teal(model, _ids(32), 0.5)
        dense = _decode(model, 4)
        with Teal(model, thresholds):
            masked = _decode(model, 4)
        with TealDecode(model, thresholds) as session:
            fast = _decode(model, 4)
            kept = session.kept_fraction()
            assert all(isinstance(m, TealLinear) for m in session.layers) and len(session.layers) == 4 * 2
        after = model(_ids()).logits
    assert torch.equal(fast[0], masked[0])  # the prompt: the same masked dense products
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 3e-2, "atol": 3e-2}
    for got, want in zip(fast[1:], masked[1:], strict=True):
        torch.testing.assert_close(got, want, **tol)
    assert (masked[-1] - dense[-1]).abs().max() > 1e-2  # the thresholds change the model: the test can fail
    assert 0.3 < kept < 0.7  # the kernel ran on the steps and skipped about half the entries
    assert torch.equal(after, dense[0])  # the model's own projections are back


def test_threshold_zero_decodes_as_the_dense_model(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    with torch.no_grad():
        dense = _decode(model, 3)
        with TealDecode(model, [0.0] * len(teal_sites(model))) as session:
            fast = _decode(model, 3)
            assert session.kept_fraction() > 0.99
    assert torch.equal(fast[0], dense[0])
    for got, want in zip(fast[1:], dense[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_shared_transposed_weights_and_bad_inputs(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    n = len(teal_sites(model))
    wts = transposed_weights(model)
    qkv = model.layers[0].attn.qkv.weight
    assert len(wts) == n and torch.equal(wts[0], qkv.t())
    with pytest.raises(ConfigError, match="thresholds"):
        TealDecode(model, [0.1] * (n - 1))
    with pytest.raises(ConfigError, match="thresholds"):
        TealDecode(model, [-0.1] * n)
    with pytest.raises(ConfigError, match="transposed"):
        TealDecode(model, [0.1] * n, wts[:-1])
    with TealDecode(model, [0.1] * n, wts) as session:
        assert session.layers[0].wt is wts[0]  # no copy per session
