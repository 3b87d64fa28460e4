"""The fused kernels compute what the pure tensor functions specify."""

from __future__ import annotations

import pytest
import torch

from lmbricks.merge import kernels, task_vectors
from lmbricks.merge.sparsify import magnitude_window, rank_window, select_rank
from lmbricks.merge.task_vectors import TrimState, apply_trim, combine_deltas, prepare_trim


def _inputs(dtype: torch.dtype, m: int, n: int = 50_000, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g).mul_(0.02)
    tuned = [(base + torch.randn(n, generator=g).mul_(0.002)).to(dtype) for _ in range(m)]
    return base.to(dtype), tuned


def _reference(base, tensors, states, weights, consensus, normalize, lam, offset=0):  # type: ignore[no-untyped-def]
    b = base.float()
    deltas = []
    for t, st in zip(tensors, states, strict=True):
        d = t.float() - b
        if st.window is not None:
            d = d * st.window.mask(d.abs(), offset)
        deltas.append(d * st.scale)
    return combine_deltas(b, deltas, weights, consensus=consensus, normalize=normalize, lam=lam)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("consensus", [True, False])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_fused_trim_and_combine_equals_the_tensor_functions(dtype: torch.dtype, consensus: bool, m: int) -> None:
    base, tensors = _inputs(dtype, m, seed=m)
    weights = [0.5, -0.3, 0.9][:m]
    states = [
        TrimState(magnitude_window((t.float() - base.float()).abs(), d), s)
        for t, d, s in zip(tensors, [0.5, 0.3, 1.0], [1.0, 1.7, 1.0], strict=False)
    ]
    for normalize, lam in [(True, 1.0), (False, 0.7)]:
        want = _reference(base, tensors, states, weights, consensus, normalize, lam)
        got = kernels.combine_block(
            base,
            tensors,
            weights,
            windows=[s.window for s in states],
            scales=[s.scale for s in states],
            consensus=consensus,
            normalize=normalize,
            lam=lam,
        )
        if consensus:
            # the elected sign of a sum that cancels to within rounding may differ (the eager kernels
            # may fuse multiply-adds); everywhere else the results agree
            w32 = torch.tensor(weights, dtype=torch.float32).double()
            terms = torch.stack(
                [
                    w
                    * st.scale
                    * (t.double() - base.double())
                    * (st.window.mask((t.float() - base.float()).abs()) if st.window is not None else 1)
                    for w, t, st in zip(w32, tensors, states, strict=False)
                ]
            )
            size = terms.abs().sum(0)
            clear = (terms.sum(0).abs() > 1e-5 * size) | (size == 0)
            assert int((~clear).sum()) < 0.005 * clear.numel()
            got, want = got[clear], want[clear]
        torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-7)


def test_fused_output_rounds_to_bf16_like_torch() -> None:
    base, tensors = _inputs(torch.bfloat16, 2, n=100_000)
    want = kernels.combine_block(None, tensors, [0.4, 0.6]).to(torch.bfloat16)
    out = torch.empty(100_000, dtype=torch.bfloat16)
    kernels.combine_block(None, tensors, [0.4, 0.6], out=out)
    assert torch.equal(out.view(torch.int16), want.view(torch.int16))
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.0e38, 1.0e-40])
    out = torch.empty(7, dtype=torch.bfloat16)
    kernels.combine_block(None, [special], [1.0], out=out)
    torch.testing.assert_close(out.float(), special.to(torch.bfloat16).float(), equal_nan=True)


def test_ties_at_the_cut_are_kept_by_flat_index_in_blocks() -> None:
    base = torch.zeros(12)
    tuned = torch.tensor([1.0, 2.0, 2.0, -2.0, 3.0, 2.0, 0.5, 2.0, -1.0, 2.0, 0.1, 0.2])
    window = rank_window(tuned.abs(), 7, 12)  # the 5 largest: 3 and four of the six 2s
    want = tuned * window.mask(tuned.abs())
    parts = [
        kernels.combine_block(base[a:b], [tuned[a:b]], [1.0], windows=[window], offset=a, normalize=False)
        for a, b in [(0, 5), (5, 12)]
    ]
    assert torch.equal(torch.cat(parts), want)
    assert int((want != 0).sum()) == 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_radix_select_equals_kthvalue(dtype: torch.dtype) -> None:
    base, (tuned,) = _inputs(dtype, 1, n=300_000)
    mags = (tuned.float() - base.float()).abs()
    for k in (1, 2, 1000, 150_000, 299_999, 300_000):
        assert kernels.rank_of_abs_delta(base, tuned, k) == select_rank(mags, k)
    v, below, equal = kernels.rank_of_abs_delta(base, tuned, 150_000)
    j = kernels.abs_delta_tie_position(base, tuned, v, 0)
    assert float(mags[j]) == v and int((mags[:j] == v).sum()) == 0


def test_fused_prepare_and_apply_equal_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    base, tensors = _inputs(torch.bfloat16, 2, n=80_000, seed=5)
    kw = dict(consensus=True, normalize=True, lam=1.0)
    fused = apply_trim(base, tensors, prepare_trim(base, tensors, [0.5, 0.3], None, False), [0.5, 0.5], offset=0, **kw)
    monkeypatch.setattr(task_vectors, "USE_FUSED", False)  # what LMBRICKS_FUSED=0 at import sets
    plain = apply_trim(base, tensors, prepare_trim(base, tensors, [0.5, 0.3], None, False), [0.5, 0.5], offset=0, **kw)
    torch.testing.assert_close(fused, plain, rtol=2e-6, atol=1e-7)


def test_kernel_generation_is_safe_from_many_threads(tmp_path, monkeypatch) -> None:
    """Workers asking for the same new kernel at once all get it (a CI run once lost the race)."""
    from concurrent.futures import ThreadPoolExecutor

    from lmbricks.merge import kernels

    monkeypatch.setattr(kernels, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(kernels, "_KERNELS", {})
    variant = kernels._Variant(
        m=3, has_base=True, windowed=False, scaled=True, consensus=False, normalize=False, scaled_out=True
    )
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: kernels._combine_kernel(variant), range(16)))
    assert all(k is got[0] for k in got)
    assert len(list((tmp_path / "generated").glob("*.py"))) == 1
    assert not list((tmp_path / "generated").glob("*.tmp"))
