"""Balancing losses against their formulas, recomputed here the long way."""

from __future__ import annotations

import math

import torch

from lmbricks.moe import importance_loss, load_loss, switch_loss, z_loss


def _cv2_reference(values: list[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n  # population variance
    return var / (mean**2 + 1e-10)


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_switch_loss_of_perfectly_balanced_router_is_one() -> None:
    e, t = 4, 8  # k = 2 slots per token
    probs = torch.full((t, e), 1.0 / e)
    # every expert receives exactly t*k/e pairs
    indices = torch.tensor([[i % e, (i + 1) % e] for i in range(t)])
    assert torch.bincount(indices.flatten(), minlength=e).tolist() == [4, 4, 4, 4]
    assert torch.isclose(switch_loss(probs, indices, e), torch.tensor(1.0), atol=1e-6)
    # top-1 too
    assert torch.isclose(switch_loss(probs, indices[:, :1], e), torch.tensor(1.0), atol=1e-6)


def test_switch_loss_formula_and_collapse() -> None:
    torch.manual_seed(0)
    t, e, k = 10, 4, 2
    probs = torch.randn(t, e).softmax(-1)
    indices = probs.topk(k, -1).indices
    f = [sum(int(indices[i, j] == x) for i in range(t) for j in range(k)) / (t * k) for x in range(e)]
    p = [float(probs[:, x].mean()) for x in range(e)]
    ref = e * sum(fi * pi for fi, pi in zip(f, p, strict=True))
    assert abs(float(switch_loss(probs, indices, e)) - ref) < 1e-6
    # a router that sends everything to expert 0 with certainty scores N
    collapsed = torch.zeros(t, e)
    collapsed[:, 0] = 1.0
    assert float(switch_loss(collapsed, torch.zeros(t, 1, dtype=torch.long), e)) == e


def test_z_loss_matches_formula() -> None:
    torch.manual_seed(1)
    logits = torch.randn(7, 5) * 3
    ref = sum(math.log(sum(math.exp(float(v)) for v in row)) ** 2 for row in logits) / 7
    assert abs(float(z_loss(logits)) - ref) < 1e-4


def test_importance_loss_matches_formula() -> None:
    torch.manual_seed(2)
    gates = torch.rand(9, 4) * (torch.rand(9, 4) > 0.5)
    importance = [float(gates[:, i].sum()) for i in range(4)]
    assert abs(float(importance_loss(gates)) - _cv2_reference(importance)) < 1e-6
    assert float(importance_loss(torch.full((6, 3), 0.5))) < 1e-9  # equal importance -> 0


def test_load_loss_matches_smooth_estimator() -> None:
    torch.manual_seed(3)
    t, e, k = 6, 5, 2
    clean = torch.randn(t, e)
    std = torch.rand(t, e) + 0.5
    noisy = clean + torch.randn(t, e) * std
    load = []
    for i in range(e):
        total = 0.0
        for x in range(t):
            others = sorted((float(noisy[x, j]) for j in range(e) if j != i), reverse=True)
            kth_excluding = others[k - 1]  # k-th greatest of the other components
            total += _phi((float(clean[x, i]) - kth_excluding) / float(std[x, i]))
        load.append(total)
    assert abs(float(load_loss(clean, noisy, std, k)) - _cv2_reference(load)) < 1e-5
    assert float(load_loss(clean, noisy, std, e)) == 0.0  # k = E: every expert always in


def test_padding_mask_excludes_tokens() -> None:
    torch.manual_seed(4)
    t, e = 8, 4
    logits = torch.randn(t, e)
    probs = logits.softmax(-1)
    indices = probs.topk(2, -1).indices
    mask = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    keep = mask.nonzero().squeeze(1)
    # huge junk in the padded rows must not matter
    junk_logits = logits.clone()
    junk_logits[~mask] = 1e4
    assert torch.allclose(z_loss(junk_logits, mask), z_loss(logits[keep]))
    assert torch.allclose(switch_loss(probs, indices, e, mask), switch_loss(probs[keep], indices[keep], e))
    assert torch.allclose(importance_loss(probs, mask), importance_loss(probs[keep]))
    std = torch.ones(t, e)
    assert torch.allclose(load_loss(logits, logits, std, 2, mask), load_loss(logits[keep], logits[keep], std[keep], 2))
