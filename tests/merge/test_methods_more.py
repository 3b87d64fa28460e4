"""nuslerp, karcher, sce, ram, ramplus_tl, nearswap, arcee_fusion: hand-computed references on small
tensors, the chunked forms against the whole tensor for every option, and the tie rule of rank cuts."""

from __future__ import annotations

import math

import pytest
import torch

from lmbricks.errors import MergeError
from lmbricks.merge.registry import get_method
from lmbricks.merge.task_vectors import row_blocks


def _fn(name: str):
    return get_method(name).fn


def _slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Textbook SLERP of two vectors in float64."""
    a, b = v0.double(), v1.double()
    omega = math.acos(float((a @ b) / (a.norm() * b.norm())))
    return (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)


# -- nuslerp ---------------------------------------------------------------------------------------


def test_nuslerp_flattened_with_base_is_task_vector_slerp() -> None:
    g = torch.Generator().manual_seed(0)
    base, d1, d2 = (torch.randn(3, 4, generator=g) for _ in range(3))
    out = _fn("nuslerp")(base, [base + d1, base + d2], weight=[0.25, 0.75])
    ref = base.double() + _slerp(0.75, d1.reshape(-1), d2.reshape(-1)).reshape(3, 4)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("row_wise", [False, True])
def test_nuslerp_row_and_column_vectors(row_wise: bool) -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    out = _fn("nuslerp")(None, [a, b], weight=[0.6, 0.4], nuslerp_flatten=False, nuslerp_row_wise=row_wise)
    if row_wise:  # vectors along the first axis: one per column
        ref = torch.stack([_slerp(0.4, a[:, j], b[:, j]) for j in range(4)], dim=1)
    else:
        ref = torch.stack([_slerp(0.4, a[i], b[i]) for i in range(3)])
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)
    flat = _fn("nuslerp")(None, [a, b], weight=[0.6, 0.4])
    assert float((flat - out).abs().max()) > 1e-3  # the three modes are different maths


def test_nuslerp_colinear_rows_fall_back_to_lerp_and_zero_weights_mean_half() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    b = torch.tensor([[2.0, 4.0], [-1.0, 3.0]])  # row 0 colinear with a's
    out = _fn("nuslerp")(None, [a, b], weight=[1.0, -1.0], nuslerp_flatten=False)  # t = 0.5
    torch.testing.assert_close(out[0], 0.5 * a[0] + 0.5 * b[0])
    torch.testing.assert_close(out[1].double(), _slerp(0.5, a[1], b[1]), rtol=0, atol=1e-6)


def test_nuslerp_needs_two_models() -> None:
    with pytest.raises(MergeError, match="exactly two"):
        _fn("nuslerp")(None, [torch.ones(3)], weight=[1.0])


# -- karcher ---------------------------------------------------------------------------------------


def test_karcher_of_two_is_the_geodesic_midpoint_at_the_mean_norm() -> None:
    a = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    out = _fn("karcher")(None, [a, b])
    torch.testing.assert_close(out, torch.tensor([[3 / math.sqrt(2), 3 / math.sqrt(2)], [0.0, 0.0]]))


def test_karcher_result_satisfies_the_karcher_condition() -> None:
    """At the Karcher mean m the log maps of the inputs sum to zero: Σ Ωi/sinΩi (ui - cosΩi m) = 0."""
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(5, 6, generator=g) * s for s in (1.0, 2.0, 0.5, 1.5)]
    out = _fn("karcher")(None, xs, max_iter=100, tol=1e-9).double().reshape(-1)
    m = out / out.norm()
    pull = torch.zeros_like(m)
    for x in xs:
        u = x.double().reshape(-1) / x.double().norm()
        c = float(u @ m)
        omega = math.acos(max(-1.0, min(1.0, c)))
        pull += omega / math.sin(omega) * (u - c * m)
    assert float(pull.norm()) < 1e-5
    assert math.isclose(float(out.norm()), sum(float(x.norm()) for x in xs) / 4, rel_tol=1e-6)
    # the plain linear mean is not on that point: the condition is not met trivially
    lin = torch.stack(xs).mean(0).double().reshape(-1)
    assert float((lin / lin.norm() - m).norm()) > 1e-3


def test_karcher_leaves_out_zero_inputs_and_stops_at_max_iter() -> None:
    a, b, z = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.zeros(2)
    out = _fn("karcher")(None, [a, b, z])  # direction from a and b, scale (1 + 1 + 0) / 3
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0]) * (2 / 3) / math.sqrt(2))
    assert torch.equal(_fn("karcher")(None, [z, z]), z)
    # max_iter 0: the start point, the normalised mean of the unit vectors
    c = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    start = _fn("karcher")(None, list(c), max_iter=0)
    torch.testing.assert_close(start, torch.full((3,), 5 / 3 / math.sqrt(3)))


# -- sce -------------------------------------------------------------------------------------------


def test_sce_hand_computed_3x4() -> None:
    base = torch.zeros(3, 4)
    d1 = torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.5, 0.5, -1.0, 0.0], [2.0, 0.0, 1.0, -1.0]])
    d2 = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [0.5, -0.5, 1.0, 0.0], [0.0, 4.0, 1.0, -3.0]])
    # variances (flat): 1 .25 0 1 / 0 .25 1 0 / 1 4 0 1; 8 are nonzero, select_topk 0.5 keeps 4:
    # the 4 (index 9), then three of the five tied 1s (indices 0, 3, 6, 8, 11): the highest survive
    var = torch.stack([d1, d2]).var(0, unbiased=False)
    assert int(torch.count_nonzero(var)) == 8
    keep = torch.zeros(12, dtype=torch.bool)
    keep[[6, 8, 9, 11]] = True
    keep = keep.reshape(3, 4)
    s1, s2 = d1 * keep, d2 * keep
    w1, w2 = float((s1**2).mean()), float((s2**2).mean())
    w1, w2 = w1 / (w1 + w2), w2 / (w1 + w2)
    sign = torch.where(s1 + s2 >= 0, 1.0, -1.0)
    m1, m2 = (s1.sign() == sign).float(), (s2.sign() == sign).float()
    ref = (w1 * m1 * s1 + w2 * m2 * s2) / (w1 * m1 + w2 * m2).clamp(min=1e-6)
    out = _fn("sce")(base, [d1, d2], select_topk=0.5)
    torch.testing.assert_close(out, ref)
    assert int((out != 0).sum()) == 4  # every selected entry has an agreeing model


def test_sce_weights_follow_the_task_vectors_even_when_tiny() -> None:
    """Documented difference: mergekit falls back to uniform weights when Σ mean(δi²) < 1e-6;
    lmbricks only when it is 0. With |δ| ~ 1e-4 the calculate step still weights by energy."""
    base = torch.zeros(4)
    d1 = torch.tensor([1e-4, 1e-4, 1e-4, 1e-4])
    d2 = torch.tensor([3e-4, 3e-4, 3e-4, -3e-4])
    out = _fn("sce")(base, [d1, d2])
    w1, w2 = 0.1, 0.9  # mean squares 1e-8 : 9e-8
    # entries 0-2 agree (+): (w1 1e-4 + w2 3e-4) / (w1 + w2); entry 3 elects - (sum -2e-4): d2 alone
    ref = torch.tensor([w1 * 1e-4 + w2 * 3e-4] * 3 + [-3e-4])
    torch.testing.assert_close(out, ref)
    assert torch.equal(_fn("sce")(base, [base.clone(), base.clone()]), base)  # all zero: uniform, no NaN


def test_sce_one_model_with_selection_keeps_the_base() -> None:
    base, ft = torch.zeros(5), torch.arange(5.0)
    assert torch.equal(_fn("sce")(base, [ft], select_topk=0.5), base)  # variance 0: nothing selected
    assert torch.equal(_fn("sce")(base, [ft]), ft)


# -- ram, ramplus_tl ------------------------------------------------------------------------------


def test_ram_averages_each_entry_over_the_models_that_changed_it() -> None:
    base = torch.zeros(5)
    d1 = torch.tensor([0.3, 0.2, 0.0, 0.5, 1e-6])
    d2 = torch.tensor([0.0, 0.4, 0.0, -0.1, 0.0])
    d3 = torch.tensor([0.0, 0.6, 0.0, 0.0, 0.0])
    out = _fn("ram")(base, [d1, d2, d3])
    torch.testing.assert_close(out, torch.tensor([0.3, 0.4, 0.0, 0.2, 0.0]))


def test_ramplus_boosts_unique_entries_by_the_shared_ratio() -> None:
    base = torch.zeros(6)
    d1 = torch.tensor([1.0, 1.0, 1.0, 2.0, 0.0, 0.0])  # unique 3 (0, 1, 2), shared 1 (3)
    d2 = torch.tensor([0.0, 0.0, 0.0, 4.0, 1.0, 0.0])  # unique 1 (4), shared 1 (3)
    out = _fn("ramplus_tl")(base, [d1, d2], r=0.5, alpha=0.8)
    lam1 = 1 + 0.5 * min(1 / 3, 0.8)
    lam2 = 1 + 0.5 * min(1 / 1, 0.8)
    torch.testing.assert_close(out, torch.tensor([lam1, lam1, lam1, 3.0, lam2, 0.0]))


def test_ramplus_with_epsilon_zero_and_no_unique_entries_stays_finite() -> None:
    # found by tests/reliability/test_merge_fuzz.py: shared / max(unique, ε) divided by zero
    base, ft = torch.zeros(4), torch.tensor([1.0, 2.0, 0.0, 3.0])
    out = _fn("ramplus_tl")(base, [ft, ft.clone()], epsilon=0.0)
    torch.testing.assert_close(out, ft)  # every entry shared by both: their mean
    assert _fn("ramplus_tl")(base, [base.clone(), base.clone()], epsilon=0.0).eq(0).all()


# -- nearswap --------------------------------------------------------------------------------------


def test_nearswap_swaps_near_entries_and_nudges_far_ones() -> None:
    base = torch.tensor([0.0, 0.0, 0.0, 1.0])
    other = torch.tensor([0.05, -0.2, 0.0, 3.0])
    out = _fn("nearswap")(base, [other], t=0.1)
    # |diff| 0.05 <= t: swapped; 0.2: w = 0.5; 0: w = 1 (diff floored at 1e-6); 2.0: w = 0.05
    torch.testing.assert_close(out, torch.tensor([0.05, -0.1, 0.0, 1.0 + 0.05 * 2.0]))
    assert torch.equal(_fn("nearswap")(base, [other], t=0.0), base)


# -- arcee_fusion ----------------------------------------------------------------------------------


def test_arcee_fusion_keeps_the_outlier_importances() -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 50, generator=g)
    ft = base + 0.01 * torch.randn(6, 50, generator=g)
    ft[2, 7] += 1.0  # one important change
    ft[4] += 0.3 * torch.randn(50, generator=g)  # one row that changed a lot
    p = torch.softmax(ft.double(), -1) + 1e-8
    q = torch.softmax(base.double(), -1) + 1e-8
    importance = (ft - base).double().abs() * (p * (p / q).log()).sum(-1, keepdim=True)
    s = importance.reshape(-1).sort().values
    n = s.numel()
    q1, med, q3 = (s[int(x * (n - 1))] for x in (0.25, 0.5, 0.75))
    keep = importance >= med + 1.5 * (q3 - q1)
    out = _fn("arcee_fusion")(base, [ft])
    torch.testing.assert_close(out, torch.where(keep, ft, base))
    assert bool(keep[2, 7]) and 0 < int(keep.sum()) < n // 4


def test_arcee_fusion_of_a_vector_uses_one_softmax_over_it() -> None:
    base = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])
    ft = torch.tensor([0.01, 0.02, 0.0, 2.0, 0.03])
    out = _fn("arcee_fusion")(base, [ft])
    # importances are |δ| times one KL: the quantile fence over |δ| keeps the entry 2.0 only
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0]))


# -- chunked forms with non-default options -------------------------------------------------------


CASES = [
    ("nuslerp", {"weight": [0.3, 0.7], "nuslerp_flatten": False, "nuslerp_row_wise": False}, True),
    ("nuslerp", {"weight": [0.3, 0.7], "nuslerp_flatten": False, "nuslerp_row_wise": True}, True),
    ("nuslerp", {"weight": [0.3, 0.7], "nuslerp_flatten": False, "nuslerp_row_wise": True}, False),
    ("karcher", {"max_iter": 5, "tol": 1e-6}, False),
    ("sce", {"select_topk": 0.3, "int8_mask": False}, True),
    ("ramplus_tl", {"r": 0.5, "alpha": 0.8, "epsilon": 0.05}, True),
    ("arcee_fusion", {}, True),
    ("ram", {"epsilon": 0.05}, True),
    ("nearswap", {"t": 0.05}, True),
]


@pytest.mark.parametrize(("name", "params", "with_base"), CASES)
@pytest.mark.parametrize("shape", [(37, 11), (29,), (5, 4, 3)])
def test_chunked_forms_equal_the_whole_tensor(name: str, params: dict, with_base: bool, shape: tuple) -> None:
    m = get_method(name)
    g = torch.Generator().manual_seed(9)
    base = torch.randn(*shape, generator=g).bfloat16()
    n = 1 if m.max_models == 1 else (2 if m.max_models == 2 else 3)
    tensors = [(base.float() + 0.1 * torch.randn(*shape, generator=g)).bfloat16() for _ in range(n)]
    b = base if with_base else None
    whole = m.fn(b, tensors, **params)
    assert m.chunked is not None
    state = m.chunked.prepare(b, tensors, **params)
    per_row = int(torch.Size(shape[1:]).numel()) if len(shape) > 1 else 1
    parts = []
    for r0, r1 in row_blocks(torch.Size(shape), 12):
        blk = m.chunked.apply(
            b[r0:r1] if b is not None else None, [t[r0:r1] for t in tensors], state=state, offset=r0 * per_row,
            **params,
        )  # fmt: skip
        parts.append(blk)
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-6, atol=1e-6)
    assert float((whole - tensors[0].float()).abs().max()) > 1e-3  # the merge did something


# -- tie-breaking at a rank cut --------------------------------------------------------------------


def _tied_deltas(n: int, seed: int) -> torch.Tensor:
    """Deltas with five magnitudes only (as bf16-quantised fine-tunes have): most entries tie."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]) * 2.0**-9
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return levels[torch.randint(0, 5, (n,), generator=g)] * sign


@pytest.mark.parametrize("density", [0.1, 0.3, 0.55])
def test_magnitude_cut_keeps_the_exact_fraction_and_drops_the_lowest_indices_among_ties(density: float) -> None:
    """TIES keeps exactly max(1, int(d·n)) entries of |δ|; of the entries equal to the cut value, those
    with the lowest flat indices are dropped first. Whole tensor and row blocks agree."""
    n_rows, n_cols = 40, 25
    delta = _tied_deltas(n_rows * n_cols, 11).reshape(n_rows, n_cols)
    base = torch.zeros(n_rows, n_cols)
    m = get_method("ties")
    params = {"weight": [1.0], "density": [density], "lam": 1.0, "normalize": True, "rescale": False,
              "int8_mask": False}  # fmt: skip
    outs = [m.fn(base, [delta], **params)]
    assert m.chunked is not None
    state = m.chunked.prepare(base, [delta], **params)
    outs.append(torch.cat([m.chunked.apply(base[r0:r1], [delta[r0:r1]], state=state, offset=r0 * n_cols, **params)
                           for r0, r1 in row_blocks(base.shape, 100)]))  # fmt: skip
    n = delta.numel()
    k = max(1, int(density * n))
    mags = delta.abs().reshape(-1)
    cut = float(mags.sort(descending=True).values[k - 1])
    above = mags > cut
    tied = (mags == cut).nonzero().reshape(-1)
    assert tied.numel() > 50  # the cut falls inside a large group of equal magnitudes
    keep_tied = k - int(above.sum())
    expected = above.clone()
    expected[tied[tied.numel() - keep_tied :]] = True  # the highest indices of the tied group survive
    for out in outs:
        kept = (out != 0).reshape(-1)
        assert int(kept.sum()) == k
        assert torch.equal(kept, expected)
        torch.testing.assert_close(out.reshape(-1)[kept], delta.reshape(-1)[kept], rtol=0, atol=0)


def test_sce_variance_cut_uses_the_same_tie_rule() -> None:
    base = torch.zeros(200)
    d1 = _tied_deltas(200, 12)
    d2 = -d1  # variance = d1², five levels: ties again
    out = _fn("sce")(base, [d1, d2 * 0], select_topk=0.3)
    var = torch.stack([d1, d2 * 0]).var(0, unbiased=False)
    k = int(int(torch.count_nonzero(var)) * 0.3)
    cut = float(var.sort(descending=True).values[k - 1])
    tied = (var == cut).nonzero().reshape(-1)
    expected = var > cut
    expected[tied[tied.numel() - (k - int(expected.sum())) :]] = True
    assert torch.equal(out != 0, expected)
