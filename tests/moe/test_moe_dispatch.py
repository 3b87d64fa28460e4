"""Dispatch: gradients, loop vs grouped matmul, capacity, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmbricks.moe import Experts, apply_capacity, expert_capacity, plan_dispatch
from lmbricks.moe.activations import ACTIVATIONS
from lmbricks.moe.dispatch import grouped_mm_available
from lmbricks.moe.expert_ffn import expert_ffn_loop
from lmbricks.moe.rows import combine_rows, gather_rows


def _reference(x, weights, indices, keep, experts: Experts) -> torch.Tensor:
    """Token by token, expert by expert: sum_j w_j * E_{i_j}(x) over kept pairs."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(indices.shape[1]):
            if keep is not None and not keep[t, j]:
                continue
            e = int(indices[t, j])
            h = x[t] @ experts.w_in[e]
            if experts.gated:
                g, u = h.chunk(2)
                a = F.silu(g) * u
            else:
                a = F.gelu(h) if experts.activation.name == "gelu" else F.relu(h)
            out[t] += weights[t, j] * (a @ experts.down[e])
    return out


def _routing(t: int, k: int, e: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    indices = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    weights = torch.rand(t, k, generator=g)
    return weights, indices


@pytest.mark.parametrize("activation", ["swiglu", "gelu", "relu"])
@pytest.mark.parametrize("with_keep", [False, True])
def test_experts_match_reference(activation: str, with_keep: bool) -> None:
    torch.manual_seed(0)
    experts = Experts(5, 8, 12, activation)
    x = torch.randn(11, 8)
    weights, indices = _routing(11, 2, 5)
    keep = torch.rand(11, 2) > 0.3 if with_keep else None
    y = experts(x, weights, indices, keep)
    assert torch.allclose(y, _reference(x, weights, indices, keep, experts), atol=1e-5)


@pytest.mark.parametrize("activation", ["swiglu", "gelu", "relu"])
def test_gradcheck_dispatch_path(activation: str) -> None:
    torch.manual_seed(0)
    t, k, e, h, i = 6, 2, 3, 4, 5
    n = 2 * i if activation == "swiglu" else i
    x = torch.randn(t, h, dtype=torch.double, requires_grad=True)
    w = torch.rand(t, k, dtype=torch.double, requires_grad=True)
    w_in = torch.randn(e, h, n, dtype=torch.double, requires_grad=True)
    w_out = torch.randn(e, i, h, dtype=torch.double, requires_grad=True)
    indices = torch.randint(0, e, (t, k))
    for keep in (None, torch.rand(t, k) > 0.3):
        plan = plan_dispatch(indices, keep, e)

        def f(x, w, w_in, w_out, plan=plan):
            ys = expert_ffn_loop(gather_rows(x, plan), w_in, w_out, plan.counts, ACTIVATIONS[activation])
            return combine_rows(ys, w, plan)

        assert torch.autograd.gradcheck(f, (x, w, w_in, w_out))


def _grads(experts: Experts, x, weights, indices, keep, upstream):
    experts.zero_grad(set_to_none=True)
    xg, wg = x.clone().requires_grad_(), weights.clone().requires_grad_()
    y = experts(xg, wg, indices, keep)
    if upstream is None:
        y.sum().backward()  # stride-0 upstream gradient
    else:
        (y * upstream).sum().backward()
    return y, xg.grad, wg.grad, experts.w_in.grad.clone(), experts.down.grad.clone()


@pytest.mark.skipif(not grouped_mm_available(torch.zeros(1)), reason="torch has no CPU grouped matmul")
@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("stride0", [False, True])
def test_grouped_and_loop_agree_forward_and_backward(activation: str, k: int, stride0: bool) -> None:
    torch.manual_seed(0)
    experts = Experts(6, 16, 24, activation)
    x = torch.randn(40, 16)
    weights, indices = _routing(40, k, 6)
    indices[indices == 5] = 4  # expert 5 gets no token: its gradient must be exactly zero
    keep = torch.rand(40, k) > 0.2
    upstream = None if stride0 else torch.randn(40, 16)
    experts.impl = "loop"
    ref = _grads(experts, x, weights, indices, keep, upstream)
    experts.impl = "grouped"
    got = _grads(experts, x, weights, indices, keep, upstream)
    for a, b in zip(ref, got, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert ref[3][5].abs().sum() == 0 and ref[4][5].abs().sum() == 0


def test_dispatch_is_deterministic() -> None:
    torch.manual_seed(0)
    experts = Experts(4, 16, 24)
    x = torch.randn(64, 16)
    weights, indices = _routing(64, 2, 4)
    up = torch.randn(64, 16)
    a = _grads(experts, x, weights, indices, None, up)
    b = _grads(experts, x, weights, indices, None, up)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)


def test_weight_gradient_is_one_buffer_per_parameter() -> None:
    """No per-expert full-size gradients: grads land in one (E, ...) tensor, experts without tokens get 0."""
    torch.manual_seed(0)
    experts = Experts(4, 8, 8)
    x = torch.randn(5, 8)
    indices = torch.zeros(5, 1, dtype=torch.long)  # only expert 0
    experts(x, torch.ones(5, 1), indices).sum().backward()
    assert experts.gate_up.grad.shape == experts.gate_up.shape
    assert experts.gate_up.grad[1:].abs().sum() == 0 and experts.gate_up.grad[0].abs().sum() > 0


def test_plan_sorts_by_expert_and_skips_dropped() -> None:
    indices = torch.tensor([[2, 0], [1, 2], [0, 1]])
    keep = torch.tensor([[True, False], [True, True], [True, True]])
    plan = plan_dispatch(indices, keep, 3)
    assert plan.counts == [1, 2, 2]
    assert plan.order.tolist() == [4, 2, 5, 0, 3]  # flat pair ids t*k + j, by expert, stable
    assert plan.tokens.tolist() == [2, 1, 2, 0, 1]


# ----------------------------------------------------------------------------- capacity


def test_expert_capacity_formula() -> None:
    assert expert_capacity(100, 2, 8, 1.0) == 25
    assert expert_capacity(100, 2, 8, 1.25) == math.ceil(100 * 2 / 8 * 1.25)
    assert expert_capacity(7, 1, 4, 1.0) == 2


def _kept_reference(indices, weights, capacity, policy):
    t, k = indices.shape
    pairs = [(j, tt) for j in range(k) for tt in range(t)]  # slot-major = position priority
    if policy == "probability":
        pairs = sorted(pairs, key=lambda p: -float(weights[p[1], p[0]]))  # stable
    used: dict[int, int] = {}
    keep = torch.zeros(t, k, dtype=torch.bool)
    for j, tt in pairs:
        e = int(indices[tt, j])
        if used.get(e, 0) < capacity:
            used[e] = used.get(e, 0) + 1
            keep[tt, j] = True
    return keep


@pytest.mark.parametrize("policy", ["position", "probability"])
def test_apply_capacity_matches_reference(policy: str) -> None:
    torch.manual_seed(0)
    indices = torch.randint(0, 4, (30, 2))
    weights = torch.rand(30, 2)
    everyone = torch.ones(30, 2, dtype=torch.bool)
    for capacity in (0, 3, 7, 60):
        got = apply_capacity(indices, weights, everyone, 4, capacity, policy)  # type: ignore[arg-type]
        assert torch.equal(got, _kept_reference(indices, weights, capacity, policy))
        counts = torch.bincount(indices[got], minlength=4)
        assert (counts <= capacity).all()


def test_apply_capacity_ignores_non_competing_pairs() -> None:
    indices = torch.zeros(4, 1, dtype=torch.long)
    competing = torch.tensor([[False], [True], [False], [True]])
    kept = apply_capacity(indices, torch.ones(4, 1), competing, 2, 1, "position")
    assert kept[:, 0].tolist() == [False, True, False, False]


# ----------------------------------------------------------------------------- fast paths


@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_slab_batched_matmul_equals_bmm(rows: int) -> None:
    """Decode fast path: (B, m, K) @ (B, K, N) as sums over K-slabs equals the plain batched matmul."""
    from lmbricks.moe.decode import K_SLAB, slab_bmm

    torch.manual_seed(0)
    x = torch.randn(3, rows, 4 * K_SLAB)
    w = torch.randn(3, 4 * K_SLAB, 48)
    assert torch.allclose(slab_bmm(x, w), torch.bmm(x, w), atol=1e-5, rtol=1e-5)
    odd = torch.randn(3, 4 * K_SLAB + 1, 48)  # K not a multiple of the slab: plain bmm
    x_odd = torch.randn(3, rows, 4 * K_SLAB + 1)
    assert torch.equal(slab_bmm(x_odd, odd), torch.bmm(x_odd, odd))


@pytest.mark.parametrize("tokens", [1, 5, 30])
@pytest.mark.parametrize("grad", [False, True])
def test_decode_sized_batch_matches_reference(tokens: int, grad: bool) -> None:
    """Few tokens per expert (padded path or loop in inference, loop in training) vs the reference."""
    torch.manual_seed(0)
    experts = Experts(6, 64, 96)  # K = 64 (gate_up) and 96 (down) split into 32-wide slabs
    x = torch.randn(tokens, 64)
    weights, indices = _routing(tokens, 2, 6)
    with torch.set_grad_enabled(grad):
        y = experts(x, weights, indices)
    assert torch.allclose(y, _reference(x, weights, indices, None, experts), atol=1e-5)


def test_padded_span_reads_few_untouched_experts() -> None:
    from lmbricks.moe.decode import SMALL_ROWS, padded_span

    assert padded_span([2, 1, 0, 3, 2, 1, 2, 1]) == (0, 8)  # one untouched expert inside the range
    assert padded_span([0, 2, 2, 2, 0, 0, 0, 0]) == (1, 4)
    assert padded_span([0, 1, 0, 4, 0, 4, 3, 4]) is None  # 5 touched, 2 would be read for nothing
    assert padded_span([1, 0, 0, 0, 0, 0, 0, 1]) is None  # 1-token decode: loop over 2 experts
    assert padded_span([SMALL_ROWS + 1, 1, 1, 1]) is None  # a large slice: the loop


def test_cpu_combine_of_two_slots_is_bitwise_the_slot_sum() -> None:
    """The combine sums a token's two weighted rows in slot order, in fp32."""
    torch.manual_seed(0)
    t, k, e, h = 50, 2, 5, 16
    weights, indices = _routing(t, k, e)
    plan = plan_dispatch(indices, None, e)
    ys = torch.randn(plan.num_routed, h)
    got = combine_rows(ys.clone(), weights, plan)
    pair = torch.empty(t * k, h).index_copy_(0, plan.order, ys * weights.reshape(-1)[plan.order, None])
    assert torch.equal(got, pair.view(t, k, h)[:, 0] + pair.view(t, k, h)[:, 1])


def test_padded_decode_path_matches_reference() -> None:
    from lmbricks.moe.decode import padded_span

    torch.manual_seed(0)
    experts = Experts(6, 64, 96)
    indices = torch.tensor([[0, 1], [2, 3], [4, 5], [1, 2], [3, 4], [5, 0], [2, 4]])
    weights = torch.rand(7, 2)
    assert padded_span(plan_dispatch(indices, None, 6).counts) == (0, 6)
    x = torch.randn(7, 64)
    with torch.no_grad():
        y = experts(x, weights, indices)
    assert torch.allclose(y, _reference(x, weights, indices, None, experts), atol=1e-5)


@pytest.mark.parametrize("activation", ["swiglu", "relu"])
def test_concurrent_experts_equal_one_after_another(monkeypatch: pytest.MonkeyPatch, activation: str) -> None:
    """The CPU path that runs experts on several threads gives the sequential loop's values."""
    from lmbricks.moe import concurrency

    torch.manual_seed(0)
    experts = Experts(6, 16, 24, activation)
    experts.impl = "loop"
    x = torch.randn(40, 16)
    weights, indices = _routing(40, 2, 6)
    indices[indices == 5] = 4  # an expert without tokens
    upstream = torch.randn(40, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # sequential
        ref = _grads(experts, x, weights, indices, None, upstream)
        with torch.inference_mode():
            ref_infer = experts(x, weights, indices, None)
        monkeypatch.setattr(concurrency, "PARALLEL_MIN_ROWS", 1)
        torch.set_num_threads(2)  # concurrent experts, each single-threaded
        got = _grads(experts, x, weights, indices, None, upstream)
        with torch.inference_mode():  # the workers must run in inference mode too
            got_infer = experts(x, weights, indices, None)
        assert torch.get_num_threads() == 2  # restored after each call
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ref_infer, got_infer, rtol=1e-6, atol=1e-6)
    assert got[3][5].abs().sum() == 0 and got[4][5].abs().sum() == 0


@pytest.mark.parametrize("concurrent", [False, True])
@pytest.mark.parametrize("dropped", [False, True])
def test_combined_inference_equals_gather_loop_combine(
    monkeypatch: pytest.MonkeyPatch, concurrent: bool, dropped: bool
) -> None:
    """Inference's one-pass-per-expert path gives the three-step path's values exactly."""
    from lmbricks.moe import concurrency
    from lmbricks.moe.expert_ffn import expert_ffn_loop_combined

    torch.manual_seed(0)
    experts = Experts(6, 16, 24, "swiglu")
    x = torch.randn(64, 16)
    weights, indices = _routing(64, 2, 6)
    keep = torch.rand(64, 2) > 0.3 if dropped else None
    plan = plan_dispatch(indices, keep, 6)
    with torch.no_grad():
        ys = expert_ffn_loop(gather_rows(x, plan), experts.w_in, experts.down, plan.counts, ACTIVATIONS["swiglu"])
        ref = combine_rows(ys, weights, plan)
        threads = torch.get_num_threads()
        try:
            if concurrent:
                monkeypatch.setattr(concurrency, "PARALLEL_MIN_ROWS", 1)
                torch.set_num_threads(2)
            got = expert_ffn_loop_combined(x, weights, plan, experts.w_in, experts.down, ACTIVATIONS["swiglu"])
            via_module = experts(x, weights, indices, keep)
        finally:
            torch.set_num_threads(threads)
    assert torch.equal(got, ref)
    assert torch.equal(via_module, ref)
