"""TEAL's one-token kernel equals the dense product of the thresholded input (fp32 and bf16)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmbricks.sparsify.cats import threshold_mask
from lmbricks.sparsify.sparse_gemv import sparse_linear, sparse_linear_reference, transposed_weight

DTYPES = (torch.float32, torch.bfloat16)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in", [1, 3, 8, 9, 20, 64])  # the 8-row passes and the remainder rows
def test_integer_values_equal_the_dense_product_bit_for_bit(dtype: torch.dtype, n_in: int) -> None:
    """Small integers: every partial sum is exact in fp32, so any summation order gives the same bits."""
    w = torch.randint(-8, 9, (37, n_in), generator=_gen(1)).to(dtype)  # (out, in)
    x = torch.randint(-4, 5, (1, n_in), generator=_gen(2)).to(dtype)  # (1, in)
    y, kept = sparse_linear(x, transposed_weight(w), 2.0)
    want = F.linear(threshold_mask(x, 2.0), w)  # (1, out)
    assert y.dtype == dtype and y.shape == (1, 37)
    assert torch.equal(y, want)
    assert kept == int((x.abs() > 2).sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.4, 0.9])
def test_random_values_equal_the_dense_product_to_float_tolerance(dtype: torch.dtype, sparsity: float) -> None:
    w = torch.randn(96, 200, generator=_gen(3)).to(dtype)  # (out, in)
    bias = torch.randn(96, generator=_gen(4)).to(dtype)
    x = torch.randn(1, 1, 200, generator=_gen(5)).to(dtype)  # (B=1, T=1, in)
    t = float(x.float().abs().flatten().quantile(sparsity)) if sparsity else 0.0
    y, kept = sparse_linear(x, transposed_weight(w), t, bias)
    xm = threshold_mask(x, t)
    exact = F.linear(xm.double(), w.double(), bias.double())  # (1, 1, out) the thresholded input's product
    assert y.shape == (1, 1, 96) and kept == int((xm != 0).sum())
    if dtype == torch.float32:
        torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=1e-5)
    else:  # fp32 sums rounded once to bf16: within one bf16 rounding of the exact value
        torch.testing.assert_close(y.double(), exact, rtol=2**-8, atol=1e-2)
        torch.testing.assert_close(y, F.linear(xm, w, bias), rtol=2**-7, atol=2e-2)
    ref = sparse_linear_reference(x, transposed_weight(w), t) + bias  # the specification (fp32 kept rows)
    torch.testing.assert_close(y.float(), ref.float().view(1, 1, -1), rtol=2**-7, atol=2e-2)


def test_the_threshold_is_compared_in_the_inputs_dtype() -> None:
    """As torch compares a bf16 tensor with a scalar: the threshold rounded to bf16 (1.0059 -> 1.0078)."""
    x = torch.tensor([[1.0, 1.0078125, 2.0]], dtype=torch.bfloat16)
    w = torch.eye(3, dtype=torch.bfloat16)
    y, kept = sparse_linear(x, transposed_weight(w), 1.0059)
    assert torch.equal(y, F.linear(threshold_mask(x, 1.0059), w)) and kept == 1


def test_threshold_zero_drops_only_exact_zeros() -> None:
    x = torch.tensor([[0.0, -0.0, 1e-30, -2.0]])
    w = torch.randn(5, 4, generator=_gen(6))
    y, kept = sparse_linear(x, transposed_weight(w), 0.0)
    assert kept == 2
    torch.testing.assert_close(y, F.linear(x, w), rtol=1e-6, atol=1e-6)


def test_other_dtypes_are_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        transposed_weight(torch.ones(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight"):
        transposed_weight(torch.ones(3))
