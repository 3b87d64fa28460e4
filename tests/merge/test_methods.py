"""Merge methods as pure functions: identities, hand-computed references, chunked == whole."""

from __future__ import annotations

import math

import pytest
import torch

from lmbricks.merge.registry import all_methods, get_method
from lmbricks.merge.sparsify import kth_smallest, rank_window
from lmbricks.merge.task_vectors import row_blocks


def _call(name: str, base, tensors, **kw):
    m = get_method(name)
    params = {p.kwarg: p.default for p in m.params if not p.required and p.name != "seed"}
    for p in m.params:
        if p.per_input and p.kwarg in params:
            params[p.kwarg] = [p.default] * len(tensors)
    params.update(kw)
    if m.stochastic:
        params["generator"] = torch.Generator().manual_seed(0)
    return m.fn(base if m.base != "none" else None, tensors, **params)


def _weights(name: str, n: int) -> dict:
    m = get_method(name)
    out: dict = {}
    if m.param("weight") is not None:
        out["weight"] = [1.0 / n] * n
    if m.param("t") is not None:
        out["t"] = 0.37
    return out


def _n_inputs(name: str) -> int:
    m = get_method(name)
    return m.max_models if m.max_models is not None else max(m.min_models, 3)


#: Methods that do not promise F back, and why (each has hand-computed references instead).
NOT_PROMISED = {
    "arcee_fusion": "takes θ1 only where its importance is above the median + 1.5 IQR fence: most entries keep θ0",
}


@pytest.mark.parametrize("name", [m.name for m in all_methods() if m.name not in NOT_PROMISED])
def test_identical_finetunes_different_from_the_base_return_the_finetune(name: str) -> None:
    """Every input is the same fine-tune F != base, weights sum to 1, nothing trimmed: every method
    promises F (a merge of a model with itself would give base-using methods all-zero task vectors,
    which any ``base + f(δ)`` with ``f(0) = 0`` passes). slerp takes one model: slerp(F, F) = F."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 24, generator=g)
    ft = base + 0.5 * torch.randn(16, 24, generator=g)
    m = get_method(name)
    n = _n_inputs(name)
    kw = _weights(name, n)
    if m.param("density") is not None:
        kw["density"] = [1.0] * n
    if m.param("gamma") is not None:
        kw["gamma"] = [0.0] * n
    if name == "nearswap":  # every entry within t of the base: all swapped in
        kw["t"] = 1e9
    b = ft.clone() if name == "slerp" else base
    out = _call(name, b, [ft.clone() for _ in range(n)], **kw)
    assert not torch.allclose(ft, base, atol=0.1)
    torch.testing.assert_close(out, ft, rtol=1e-5, atol=1e-5)


# Hand-computed references on 3x4 tensors. θ0 = B, θi = B + Di, weights 0.6 / 0.4; the magnitudes of
# D1 and D2 have no ties at the trim boundaries, so each kept set is unambiguous; the 7th largest of each
# (1.5) sits where the other is trimmed, so a trim that keeps one entry too many changes the result.
B = torch.arange(12.0).reshape(3, 4) / 10
D1 = torch.tensor([[4.0, -1.0, 1.5, 2.0], [-3.0, 6.0, -0.2, 1.0], [0.1, -5.0, 3.0, -0.7]])
D2 = torch.tensor([[-2.0, 3.0, 1.0, -0.3], [5.0, -1.0, 0.4, -4.0], [2.0, 0.6, -6.0, 1.5]])
W = [0.6, 0.4]
# TIES at density 0.5 keeps the 6 largest |δ| of each: D1 {6, 5, 4, 3, 3, 2}, D2 {6, 5, 4, 3, 2, 2}
TRIM1 = torch.tensor([[4.0, 0, 0, 2.0], [-3.0, 6.0, 0, 0], [0, -5.0, 3.0, 0]])
TRIM2 = torch.tensor([[-2.0, 3.0, 0, 0], [5.0, 0, 0, -4.0], [2.0, 0, -6.0, 0]])
# Breadcrumbs at density 0.5, gamma 0.25: ascending |δ| ranks [3, 9) kept (top 3 and bottom 3 dropped)
CRUMB1 = torch.tensor([[0, -1.0, 1.5, 2.0], [-3.0, 0, 0, 1.0], [0, 0, 3.0, 0]])
CRUMB2 = torch.tensor([[-2.0, 3.0, 1.0, 0], [0, -1.0, 0, 0], [2.0, 0, 0, 1.5]])

HAND = {
    # θ0 + λ Σ wi δi with λ = 0.5
    "task_arithmetic": ({"lam": 0.5}, B + 0.5 * (0.6 * D1 + 0.4 * D2)),
    # elected sign of 0.6 T1 + 0.4 T2 (0 counts as +), mean of the agreeing entries: where one input
    # agrees, its trimmed value; (0, 2), (1, 2), (2, 3) are trimmed in both
    "ties": ({"density": [0.5, 0.5]}, B + torch.tensor([[4.0, 3, 0, 2], [5, 6, 0, -4], [2, -5, -6, 0]])),
    "breadcrumbs": ({"density": [0.5, 0.5], "gamma": [0.25, 0.25]}, B + 0.6 * CRUMB1 + 0.4 * CRUMB2),
    # sign of 0.6 C1 + 0.4 C2, sum (not mean: normalize is false by default) of the agreeing terms
    "breadcrumbs_ties": (
        {"density": [0.5, 0.5], "gamma": [0.25, 0.25]},
        B + torch.tensor([[-0.8, 1.2, 1.3, 1.2], [-1.8, -0.4, 0, 0.6], [0.8, 0, 1.8, 0.6]]),
    ),
    # weights 3 and 2 normalised: 0.6 θ1 + 0.4 θ2
    "linear": ({"weight": [3.0, 2.0]}, B + 0.6 * D1 + 0.4 * D2),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_computed_reference_on_a_3x4_tensor(name: str) -> None:
    kw, want = HAND[name]
    params = {"weight": W, **kw}
    out = _call(name, B, [B + D1, B + D2], **params)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)


def test_ties_hand_reference_without_normalisation() -> None:
    out = _call("ties", B, [B + D1, B + D2], weight=W, density=[0.5, 0.5], normalize=False)
    agreeing = torch.tensor([[2.4, 1.2, 0, 1.2], [2.0, 3.6, 0, -1.6], [0.8, -3.0, -2.4, 0]])
    torch.testing.assert_close(out, B + agreeing, rtol=1e-6, atol=1e-6)
    # the trimmed task vectors are the hand-picked ones: keeping one more entry changes the result
    assert int((TRIM1 != 0).sum()) == 6 and int((TRIM2 != 0).sum()) == 6


def test_slerp_of_orthogonal_equal_norm_tensors_on_3x4() -> None:
    a = torch.zeros(3, 4)
    a[0, 0] = 2.0
    b = torch.zeros(3, 4)
    b[2, 3] = 2.0  # |a| = |b|, a ⟂ b: Ω = π/2
    out = _call("slerp", a, [b], t=0.3)
    torch.testing.assert_close(out, math.sin(0.35 * math.pi) * a + math.sin(0.15 * math.pi) * b)


def test_multislerp_with_a_base_on_3x4() -> None:
    e1, e2 = torch.zeros(3, 4), torch.zeros(3, 4)
    e1[0, 1], e2[1, 2] = 1.0, 1.0
    # offsets 2 e1 and 2 e2: mean direction (e1 + e2)/√2, no tangent spread left, norm 2
    out = _call("multislerp", B, [B + 2 * e1, B + 2 * e2], weight=[1.0, 1.0])
    torch.testing.assert_close(out, B + math.sqrt(2) * (e1 + e2), rtol=1e-5, atol=1e-5)


def test_model_stock_at_cosine_one_half_on_3x4() -> None:
    d1, d2 = torch.zeros(3, 4), torch.zeros(3, 4)
    d1[0, 0] = 1.0
    d2[0, 0], d2[2, 1] = 0.5, math.sqrt(3) / 2  # unit vectors at 60 degrees
    # t = 2 cos / (1 + cos) = 2/3; θ = t mean(θi) + (1 - t) θ0 = θ0 + (2/3)(d1 + d2)/2
    out = _call("model_stock", B, [B + d1, B + d2])
    torch.testing.assert_close(out, B + (d1 + d2) / 3, rtol=1e-5, atol=1e-5)


def test_passthrough_scales_its_one_model() -> None:
    out = _call("passthrough", None, [B + D1], scale=[0.5])
    torch.testing.assert_close(out, 0.5 * (B + D1))


def _bernoulli_masks(seed: int, shape: torch.Size, probs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The masks the random-drop methods draw: one Bernoulli draw per input (density < 1), in input
    order, from the per-tensor generator (the contract the executor's seeding relies on)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.bernoulli(p.expand(shape).contiguous(), generator=g) for p in probs]


def _agree(u1: torch.Tensor, u2: torch.Tensor, normalize: bool, w: list[float]) -> torch.Tensor:
    """TIES on two weighted task vectors, entry by entry in plain Python (0 elects +)."""
    out = torch.zeros_like(u1)
    for i in range(u1.numel()):
        a, b = float(u1.view(-1)[i]), float(u2.view(-1)[i])
        s = 1.0 if a + b >= 0 else -1.0
        terms = [(x, wi) for x, wi in ((a, w[0]), (b, w[1])) if x != 0 and math.copysign(1.0, x) == s]
        total = sum(x for x, _ in terms)
        div = sum(wi for _, wi in terms) if normalize and terms else 1.0
        out.view(-1)[i] = total / div
    return out


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties", "della", "della_linear"])
@pytest.mark.parametrize("mode", ["l1", "inverse"])
def test_random_drop_with_a_known_mask(name: str, mode: str) -> None:
    """Kept entries equal δ times the rescale factor, dropped ones are zero, signs elected as TIES does:
    the masks are drawn independently from a generator seeded as the method's."""
    from lmbricks.merge.sparsify import della_probabilities

    g = torch.Generator().manual_seed(11)
    base = torch.randn(8, 16, generator=g)
    d1, d2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    m = get_method(name)
    density, eps = [0.5, 0.3], [0.2, 0.1]
    if name.startswith("della"):
        probs = [della_probabilities(d, p, e).reshape(d.shape) for d, p, e in zip((d1, d2), density, eps, strict=True)]
        extra = {"epsilon": eps}
    else:
        probs = [torch.full(d1.shape, p) for p in density]
        extra = {}
    masks = _bernoulli_masks(5, d1.shape, probs)
    assert all(0 < float(mk.mean()) < 1 for mk in masks)
    kept = []
    for d, mk, p in zip((d1, d2), masks, probs, strict=True):
        if mode == "inverse":
            kept.append(d * mk / p)
        else:  # match the L1 norm of the whole task vector
            kept.append(d * mk * (d.abs().sum() / (d * mk).abs().sum()))
    if m.name in ("dare_ties", "della"):
        normalize = m.param("normalize").default
        want = base + _agree(W[0] * kept[0], W[1] * kept[1], bool(normalize), W)
    else:
        want = base + W[0] * kept[0] + W[1] * kept[1]
    out = m.fn(base, [base + d1, base + d2], weight=W, density=density, rescale=True, rescale_mode=mode,
               generator=torch.Generator().manual_seed(5), **extra)  # fmt: skip
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_slerp_endpoints_and_lerp_fallback() -> None:
    torch.manual_seed(1)
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    torch.testing.assert_close(_call("slerp", a, [b], t=0.0), a)
    torch.testing.assert_close(_call("slerp", a, [b], t=1.0), b, rtol=1e-5, atol=1e-5)
    # hand formula at t = 0.3
    na, nb = a.norm(), b.norm()
    omega = torch.acos((a * b).sum() / (na * nb))
    ref = torch.sin(0.7 * omega) / torch.sin(omega) * a + torch.sin(0.3 * omega) / torch.sin(omega) * b
    torch.testing.assert_close(_call("slerp", a, [b], t=0.3), ref, rtol=1e-5, atol=1e-5)
    # colinear: linear interpolation
    torch.testing.assert_close(_call("slerp", a, [2 * a], t=0.5), 1.5 * a)


def test_task_arithmetic_lambda_zero_returns_base() -> None:
    torch.manual_seed(2)
    base, f1, f2 = torch.randn(3, 5, 7).unbind(0)
    out = _call("task_arithmetic", base, [f1, f2], weight=[0.7, 0.4], density=[1.0, 1.0], lam=0.0)
    torch.testing.assert_close(out, base)
    ref = base + 0.7 * (f1 - base) + 0.4 * (f2 - base)
    out = _call("task_arithmetic", base, [f1, f2], weight=[0.7, 0.4], density=[1.0, 1.0])
    torch.testing.assert_close(out, ref)


def test_ties_of_identical_finetunes_at_density_one_returns_the_finetune() -> None:
    torch.manual_seed(3)
    base, ft = torch.randn(2, 6, 10).unbind(0)
    out = _call("ties", base, [ft, ft.clone()], weight=[0.5, 0.5], density=[1.0, 1.0])
    torch.testing.assert_close(out, ft)


def test_ties_matches_hand_computation() -> None:
    base = torch.zeros(6)
    f1 = torch.tensor([3.0, -1.0, 0.5, -4.0, 2.0, 0.1])
    f2 = torch.tensor([-2.0, -3.0, 1.0, 1.0, 0.2, -5.0])
    # density 0.5: keep the 3 largest |δ| of each
    t1 = torch.tensor([3.0, 0.0, 0.0, -4.0, 2.0, 0.0])
    t2 = torch.tensor([-2.0, -3.0, 0.0, 0.0, 0.0, -5.0])
    w = [0.6, 0.4]
    u1, u2 = w[0] * t1, w[1] * t2
    sign = torch.where(u1 + u2 >= 0, 1.0, -1.0)
    m1 = (torch.sign(u1) == sign).float()
    m2 = (torch.sign(u2) == sign).float()
    div = w[0] * m1 + w[1] * m2
    div[div == 0] = 1
    ref = (u1 * m1 + u2 * m2) / div
    out = _call("ties", base, [f1, f2], weight=w, density=[0.5, 0.5])
    torch.testing.assert_close(out, ref)
    # without normalisation: plain disjoint sum
    out = _call("ties", base, [f1, f2], weight=w, density=[0.5, 0.5], normalize=False)
    torch.testing.assert_close(out, u1 * m1 + u2 * m2)


def test_breadcrumbs_drops_outliers_and_small_entries() -> None:
    base = torch.zeros(10)
    f = torch.arange(1.0, 11.0)  # |δ| = 1..10
    # density 0.5, gamma 0.2: drop top 2 (9, 10), keep next 5 (4..8), drop the rest
    out = _call("breadcrumbs", base, [f], weight=[1.0], density=[0.5], gamma=[0.2])
    ref = torch.tensor([0, 0, 0, 4, 5, 6, 7, 8, 0, 0], dtype=torch.float32)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("mode", ["inverse", "l1"])
def test_dare_is_unbiased(mode: str) -> None:
    torch.manual_seed(4)
    base = torch.zeros(4000)
    ft = torch.randn(4000)
    m = get_method("dare_linear")
    acc = torch.zeros(4000)
    n = 400
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        acc += m.fn(
            base,
            [ft],
            weight=[1.0],
            density=[0.3],
            lam=1.0,
            normalize=False,
            rescale=True,
            rescale_mode=mode,
            int8_mask=False,
            generator=g,
        )
    mean = acc / n
    # standard error of each entry: |δ| sqrt((1-p)/(p n)) ~ 0.076 |δ|
    err = (mean - ft).abs() / (ft.abs() * math.sqrt(0.7 / (0.3 * n)) + 1e-6)
    assert float(err.mean()) < 1.0  # mean |z| of a standard normal is 0.8
    sd = math.sqrt(float((ft**2).sum()) * 0.7 / (0.3 * n))
    assert abs(float(mean.sum() - ft.sum())) < 4 * sd


def test_stochastic_methods_are_reproducible() -> None:
    torch.manual_seed(5)
    base, f1, f2 = torch.randn(3, 32, 16).unbind(0)
    for name in ("dare_ties", "dare_linear", "della", "della_linear"):
        outs = []
        for _ in range(2):
            outs.append(_call(name, base, [f1, f2], weight=[0.5, 0.5], density=[0.4, 0.4]))
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "density"),
    [("dare_linear", 0.0), ("dare_ties", 0.0), ("dare_ties", 1e-300), ("della", 1e-300), ("della_linear", 1e-300)],
)
def test_inverse_rescale_with_zero_keep_probability_keeps_nothing(name: str, density: float) -> None:
    # found by tests/reliability/test_merge_fuzz.py: density 0 (or one that rounds to 0 in fp32) with
    # rescale_mode inverse divided the dropped entries by their keep probability 0: NaN everywhere
    fn = get_method(name).fn
    base, tensors = torch.zeros(4, 6), [torch.ones(4, 6), -torch.ones(4, 6)]
    kw = {"epsilon": [0.0, 0.0]} if name.startswith("della") else {}
    out = fn(base, tensors, weight=[1.0, 0.5], density=[density, density], rescale=True, rescale_mode="inverse",
             generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
    assert torch.equal(out, base)


@pytest.mark.parametrize("name", ["breadcrumbs", "breadcrumbs_ties", "ties"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_density_zero_keeps_nothing(name: str, dtype: torch.dtype) -> None:
    # found by the fuzz: breadcrumbs with density 0 (and gamma 1) on fp16 inputs, which take the
    # unfused path, asked torch.kthvalue for rank 0 of an empty window
    fn = get_method(name).fn
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(8, 8, generator=gen).to(dtype)
    tensors = [base + torch.randn(8, 8, generator=gen).to(dtype) for _ in range(2)]
    kw = {"gamma": [1.0, 0.5]} if name.startswith("breadcrumbs") else {}
    out = fn(base, tensors, weight=[1.0, 1.0], density=[0.0, 0.0], **kw)
    assert torch.equal(out, base.float())


def test_multislerp_normalises_weights_too_small_for_float32() -> None:
    # found by the fuzz: weights of 2e-313 (finite, non-zero) became 0 in float32 before being
    # divided by their sum, and every output entry was NaN
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=gen)
    a, b = base + torch.randn(6, 5, generator=gen), base + torch.randn(6, 5, generator=gen)
    fn = get_method("multislerp").fn
    tiny = fn(base, [a, b], weight=[2.2250738585e-313, 2.2250738585e-313])
    assert torch.allclose(tiny, fn(base, [a, b], weight=[1.0, 1.0]))


def test_della_probabilities_span_the_range() -> None:
    from lmbricks.merge.sparsify import della_probabilities

    p = della_probabilities(torch.tensor([[0.1, -3.0, 2.0, 0.0]]), 0.5, 0.1)
    torch.testing.assert_close(p, torch.tensor([[0.4 + 0.2 * 1 / 3, 0.6, 0.4 + 0.2 * 2 / 3, 0.4]]))


def test_model_stock_formula() -> None:
    torch.manual_seed(6)
    base = torch.randn(20)
    d1, d2 = torch.randn(20), torch.randn(20)
    cos = float((d1 @ d2) / (d1.norm() * d2.norm()))
    t = 2 * cos / (1 + cos)
    ref = t * (base + (d1 + d2) / 2) + (1 - t) * base
    out = _call("model_stock", base, [base + d1, base + d2])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_linear_weighted_mean() -> None:
    a, b, c = torch.ones(3), 2 * torch.ones(3), 4 * torch.ones(3)
    out = _call("linear", None, [a, b, c], weight=[0.4, 0.3, 0.3])
    torch.testing.assert_close(out, torch.full((3,), 0.4 + 0.6 + 1.2))
    out = _call("linear", None, [a.bfloat16(), b.bfloat16()], weight=[1.0, 1.0], normalize=False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((3,), 3.0))


def test_multislerp_two_orthogonal_unit_vectors() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = _call("multislerp", None, [a, b], weight=[0.5, 0.5])
    torch.testing.assert_close(out, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), rtol=1e-5, atol=1e-5)


def test_kth_smallest_is_exact_on_large_tied_data() -> None:
    g = torch.Generator().manual_seed(7)
    x = (
        torch.randn(3_000_000, generator=g).bfloat16().float() - torch.randn(3_000_000, generator=g).bfloat16().float()
    ).abs()
    for k in (1, 17, 1_500_000, 2_999_999, 3_000_000):
        assert kth_smallest(x, k) == float(x.kthvalue(k).values)


def test_rank_window_keeps_exact_count_with_deterministic_ties() -> None:
    x = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0, 2.0, 0.5])
    w = rank_window(x, 3, 7)  # keep the 4 largest: 3 and three of the four 2s (ties by index)
    mask = w.mask(x)
    assert int(mask.sum()) == 4
    assert mask.tolist() == [False, False, True, True, True, True, False]
    # block-wise masks agree with the whole
    parts = torch.cat([w.mask(x[:3], 0), w.mask(x[3:], 3)])
    assert parts.tolist() == mask.tolist()


@pytest.mark.parametrize("name", [m.name for m in all_methods() if m.chunked is not None])
def test_chunked_form_equals_whole_tensor(name: str) -> None:
    torch.manual_seed(8)
    m = get_method(name)
    base = torch.randn(37, 11).bfloat16()
    n = 1 if m.max_models == 1 else 2
    tensors = [(base.float() + 0.1 * torch.randn(37, 11)).bfloat16() for _ in range(n)]
    kw = _weights(name, n)
    if m.param("density") is not None:
        kw["density"] = [0.4] * n
    params = {p.kwarg: p.default for p in m.params if not p.required}
    for p in m.params:
        if p.per_input and p.kwarg in params:
            params[p.kwarg] = [p.default] * n
    params.update(kw)
    b = base if m.base != "none" else None
    whole = m.fn(b, tensors, **params)
    assert m.chunked is not None
    state = m.chunked.prepare(b, tensors, **params)
    parts = []
    for r0, r1 in row_blocks(base.shape, 50):
        parts.append(
            m.chunked.apply(
                b[r0:r1] if b is not None else None,
                [t[r0:r1] for t in tensors],
                state=state,
                offset=r0 * 11,
                **params,
            )
        )
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-6, atol=1e-6)


def test_zero_cut_drops_only_zeros_and_leaves_the_product_unchanged() -> None:
    # bf16 fine-tune deltas are mostly exactly 0: the cut of a 50% magnitude window lands on 0
    g = torch.Generator().manual_seed(3)
    base = torch.randn(3_000_000, generator=g).bfloat16()
    tuned = (base.float() + 0.002 * torch.randn(3_000_000, generator=g)).bfloat16()
    delta = tuned.float() - base.float()
    mags = delta.abs()
    n = mags.numel()
    exact = rank_window(mags, n // 2, n).mask(mags)
    free = rank_window(mags, n // 2, n, zero_is_free=True).mask(mags)
    assert int(exact.sum()) == n - n // 2
    assert bool((free <= exact).all()) and bool((mags[exact & ~free] == 0).all())
    assert torch.equal(delta * exact, delta * free)
