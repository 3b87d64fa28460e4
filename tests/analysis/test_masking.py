"""Masking and hooks: identities on the tiny Llama and properties of the pure functions."""

from __future__ import annotations

import pytest
import torch

from lmbricks.analysis import (
    cett,
    cett_threshold,
    edit_activations,
    find_ffns,
    mask_topk,
    neuron_scores,
    tap_activations,
    topk_mask,
)
from lmbricks.errors import ConfigError


def _ids() -> torch.Tensor:
    return torch.randint(3, 384, (2, 24), generator=torch.Generator().manual_seed(0))


def test_tap_leaves_logits_unchanged(tiny_model) -> None:
    model, _ = tiny_model
    blocks = find_ffns(model)
    assert len(blocks) == 2 and blocks[0].kind == "glu" and blocks[0].width == 64
    with torch.no_grad():
        ref = model(input_ids=_ids()).logits
        seen: dict[int, torch.Tensor] = {}
        with tap_activations(blocks, lambda i, a: seen.__setitem__(i, a.clone())):
            out = model(input_ids=_ids()).logits
        again = model(input_ids=_ids()).logits
    assert torch.equal(ref, out) and torch.equal(ref, again)
    assert set(seen) == {0, 1} and seen[0].shape == (2, 24, 64)


def test_captured_activation_is_silu_gate_times_up(tiny_model) -> None:
    model, _ = tiny_model
    blocks = find_ffns(model)
    inputs: dict[int, torch.Tensor] = {}
    acts: dict[int, torch.Tensor] = {}
    with torch.no_grad(), tap_activations(blocks, acts.__setitem__, on_input=inputs.__setitem__):
        model(input_ids=_ids())
    b = blocks[1]
    x = inputs[1]
    expected = torch.nn.functional.silu(x @ b.gate.weight.T) * (x @ b.up.weight.T)
    torch.testing.assert_close(acts[1], expected, rtol=1e-5, atol=1e-6)


def test_mask_zero_is_identity_and_full_zeroes_ffn_output(tiny_model) -> None:
    model, _ = tiny_model
    blocks = find_ffns(model)
    norms = [b.down_norms() for b in blocks]
    with torch.no_grad():
        ref = model(input_ids=_ids()).logits
        with edit_activations(blocks, lambda i, a: mask_topk(a, norms[i], "norm", 0.0)):
            same = model(input_ids=_ids()).logits
        outputs: list[torch.Tensor] = []
        handle = blocks[0].module.register_forward_hook(lambda _m, _a, out: outputs.append(out))
        try:
            with edit_activations(blocks, lambda i, a: mask_topk(a, norms[i], "abs", 1.0)):
                model(input_ids=_ids())
        finally:
            handle.remove()
    assert torch.equal(ref, same)
    assert outputs and torch.count_nonzero(outputs[0]) == 0


@pytest.mark.parametrize("metric", ["abs", "norm"])
@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.95])
def test_exact_keep_count_per_token(metric: str, sparsity: float) -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 7, 200, generator=gen)
    norms = torch.rand(200, generator=gen) + 0.1
    out = mask_topk(a, norms, metric, sparsity)  # type: ignore[arg-type]
    kept = (out != 0).sum(-1)
    assert torch.all(kept == round((1 - sparsity) * 200))
    # the kept ones are the top scores: min kept score >= max dropped score, per token
    s = neuron_scores(a, norms, metric)  # type: ignore[arg-type]
    keep = out != 0
    assert torch.all(s.masked_fill(~keep, float("inf")).min(-1).values >= s.masked_fill(keep, -1).max(-1).values)


def test_norm_metric_equals_formula() -> None:
    gen = torch.Generator().manual_seed(2)
    w_down = torch.randn(16, 40, generator=gen)
    a = torch.randn(5, 40, generator=gen)
    norms = w_down.norm(dim=0)
    s = neuron_scores(a, norms, "norm")
    for t in range(5):
        for i in range(40):
            contribution = a[t, i] * w_down[:, i]  # the neuron's output vector
            assert abs(float(s[t, i]) - float(contribution.norm())) < 1e-5


def test_topk_mask_rejects_bad_keep() -> None:
    with pytest.raises(ConfigError):
        topk_mask(torch.zeros(2, 4), 5)
    with pytest.raises(ConfigError):
        mask_topk(torch.zeros(2, 4), torch.ones(4), "abs", 1.5)


def test_cett_threshold_hits_target() -> None:
    gen = torch.Generator().manual_seed(3)
    w_down = torch.randn(32, 256, generator=gen)
    a = torch.randn(64, 256, generator=gen) ** 3  # heavy-tailed activations
    t = cett_threshold(a, w_down, 0.2)
    assert abs(float(cett(a, w_down, t).mean()) - 0.2) < 5e-3
    assert float(cett(a, w_down, t * 0.5).mean()) < float(cett(a, w_down, t * 2).mean())
    sparsity = float((neuron_scores(a, w_down.norm(dim=0), "norm") < t).float().mean())
    assert 0.2 < sparsity < 1.0
