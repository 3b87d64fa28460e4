"""The task-arithmetic family: one parametrised method, its rows, and its argument checks."""

from __future__ import annotations

import pytest
import torch

from lmbricks.errors import MergeError
from lmbricks.merge.methods.task_arithmetic import FAMILY, MAGNITUDE, TaskArithmetic
from lmbricks.merge.registry import Param, bind, get_method
from lmbricks.merge.task_vectors import combine_deltas, disjoint_merge, elect_sign, row_blocks


def test_every_row_is_the_registered_method() -> None:
    for name, row in FAMILY.items():
        m = get_method(name)
        assert m.fn == row.merge and m.summary == row.summary and m.formula == row.formula
        assert [p.name for p in m.params][: len(row.params)] == [p.name for p in row.params]
        assert (m.chunked is None) == row.sparsifier.stochastic


def test_a_new_row_is_a_new_variant() -> None:
    # magnitude trimming without sign election: TIES' trim, task arithmetic's sum
    row = TaskArithmetic("trim_linear", MAGNITUDE, False, False, False, "", "", "")
    base = torch.zeros(6)
    f1 = torch.tensor([3.0, -1.0, 0.5, -4.0, 2.0, 0.1])
    f2 = torch.tensor([-2.0, -3.0, 1.0, 1.0, 0.2, -5.0])
    got = row.merge(base, [f1, f2], weight=[0.6, 0.4], density=[0.5, 0.5])
    want = 0.6 * torch.tensor([3.0, 0, 0, -4.0, 2.0, 0]) + 0.4 * torch.tensor([-2.0, -3.0, 0, 0, 0, -5.0])
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", [m for m in FAMILY] + ["linear", "passthrough"])
def test_unknown_keyword_arguments_are_refused_naming_them(name: str) -> None:
    m = get_method(name)
    base, tensors = torch.zeros(4, 3), [torch.ones(4, 3)]
    kw = {"weight": [1.0]} if m.param("weight") is not None else {}
    # the family's function checks its arguments; linear's and passthrough's are typed (Python's TypeError)
    with pytest.raises(MergeError if name in FAMILY else TypeError, match="'denisty'"):
        m.fn(base if m.base != "none" else None, tensors, denisty=[0.5], **kw)
    if m.chunked is not None:
        with pytest.raises(MergeError, match="'colour'"):
            m.chunked.prepare(base, tensors, colour=1, **kw)
        state = m.chunked.prepare(base, tensors, **kw)
        with pytest.raises(MergeError, match="'colour'"):
            m.chunked.apply(base, tensors, state=state, offset=0, colour=1, **kw)


def test_a_parameter_of_another_member_is_refused() -> None:
    with pytest.raises(MergeError, match="'gamma'.*it takes weight, density, lam"):
        FAMILY["ties"].merge(torch.zeros(3), [torch.ones(3)], weight=[1.0], gamma=[0.1])


def test_bind_fills_defaults_per_input_and_names_missing_ones() -> None:
    params = (Param("weight", float, per_input=True), Param("density", float, per_input=True, default=1.0),
              Param("lambda", float, default=1.0, arg="lam"), Param("seed", int, default=0))  # fmt: skip
    assert bind("m", params, {"weight": [1, 2]}, 2) == {"weight": [1, 2], "density": [1.0, 1.0], "lam": 1.0}
    with pytest.raises(MergeError, match="'weight'"):
        bind("m", params, {"lam": 2.0}, 2)
    with pytest.raises(MergeError, match="'seed'"):
        bind("m", params, {"weight": [1], "seed": 3}, 1)  # the executor's, never the function's


@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties", "task_arithmetic", "linear"])
def test_chunked_float16_output_equals_the_whole_tensor_cast(name: str) -> None:
    # the kernels write fp32 and bf16 directly; a float16 block used to take the eager path, whose TIES
    # sign election differs where a sum cancels to rounding, so large (chunked) and small tensors disagreed
    m = get_method(name)
    assert m.chunked is not None
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 33, generator=g).bfloat16()
    tensors = [(base.float() + 0.05 * torch.randn(64, 33, generator=g)).bfloat16() for _ in range(3)]
    kw: dict = {"weight": [0.5, -0.3, 0.8]}
    if m.param("density") is not None:
        kw["density"] = [0.4, 0.7, 1.0]
    b = base if m.base != "none" else None
    whole = m.fn(b, tensors, **kw).to(torch.float16)
    state = m.chunked.prepare(b, tensors, **kw)
    out = torch.empty(base.shape, dtype=torch.float16)
    for r0, r1 in row_blocks(base.shape, 33 * 10):
        rows = [t[r0:r1] for t in tensors]
        m.chunked.apply(b[r0:r1] if b is not None else None, rows, state=state, offset=r0 * 33, out=out[r0:r1], **kw)
    assert torch.equal(out, whole)


def test_consensus_is_elect_sign_then_disjoint_merge() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(50, generator=g)
    deltas = [torch.randn(50, generator=g) for _ in range(3)]
    weights = [0.5, -0.2, 0.7]
    sign = elect_sign(deltas, weights)
    assert set(sign.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(
        sign, torch.where(sum(w * d for w, d in zip(weights, deltas, strict=True)) >= 0, 1.0, -1.0)
    )
    merged = disjoint_merge([d.clone() for d in deltas], weights, sign, normalize=True)
    combined = combine_deltas(base, [d.clone() for d in deltas], weights, consensus=True, normalize=True, lam=1.0)
    torch.testing.assert_close(combined, merged + base)
