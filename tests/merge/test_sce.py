"""sce's fast variance and its chunked form against the formula written out directly (no mergekit needed)."""

from __future__ import annotations

import pytest
import torch

from lmbricks.merge.methods.sce import _variance, sce, sce_apply, sce_prepare
from lmbricks.merge.task_vectors import row_blocks


@pytest.mark.parametrize("k", [2, 3, 5])
def test_variance_is_the_population_variance_over_models(k: int) -> None:
    d = torch.randn(k, 70, 33, generator=torch.Generator().manual_seed(k))
    torch.testing.assert_close(_variance(d), d.var(dim=0, unbiased=False), rtol=1e-6, atol=1e-7)


def _reference(base: torch.Tensor, tensors: list[torch.Tensor], topk: float) -> torch.Tensor:
    """The module docstring's formula on the whole tensor, ranks by (variance, flat index) as lmbricks cuts."""
    d = torch.stack([t - base for t in tensors]).double()
    var = d.var(dim=0, unbiased=False).reshape(-1)
    keep = int(int(torch.count_nonzero(var)) * topk)
    order = sorted(range(var.numel()), key=lambda j: (float(var[j]), j))
    mask = torch.zeros(var.numel(), dtype=torch.bool)
    mask[order[var.numel() - keep :]] = True
    d = d * mask.reshape(base.shape)
    w = d.square().reshape(len(tensors), -1).sum(1)
    w = w / w.sum()
    sign = torch.where(d.sum(0) >= 0, 1.0, -1.0).double()
    kept = w.reshape(-1, 1, 1) * (d.sign() == sign)
    return (base.double() + (d * kept).sum(0) / kept.sum(0).clamp(min=1e-6)).float()


def test_sce_chunked_equals_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 40, generator=g)
    tensors = [base + 0.01 * torch.randn(300, 40, generator=g) for _ in range(3)]
    expected = _reference(base, tensors, 0.3)
    torch.testing.assert_close(sce(base, tensors, select_topk=0.3), expected, rtol=0, atol=1e-6)
    state = sce_prepare(base, tensors, select_topk=0.3)
    blocks = [
        sce_apply(base[r0:r1], [t[r0:r1] for t in tensors], state=state, offset=r0 * 40, select_topk=0.3)
        for r0, r1 in row_blocks(base.shape, block=1000)
    ]
    assert len(blocks) > 1
    torch.testing.assert_close(torch.cat(blocks), expected, rtol=0, atol=1e-6)


def test_benchmark_row_equals_the_committed_run() -> None:
    """docs/merging.md's sce row is docs/bench/merge-sce-2026-12-07.json, figure for figure."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    run = json.loads((root / "docs" / "bench" / "merge-sce-2026-12-07.json").read_text())["sce"]
    doc = (root / "docs" / "merging.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| sce, select_topk 0.5 |"))
    shown = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", re.sub(r"\(target[^)]*\)|select_topk 0\.5", "", row))]
    keys = ["lmbricks_s", "mergekit_s", "floor_s", "vs_mergekit", "vs_floor"]
    keys += ["lmbricks_anon_gb", "mergekit_anon_gb", "lmbricks_cpu_s", "mergekit_cpu_s"]
    assert shown == [run[k] for k in keys]
    assert run["vs_mergekit"] <= 0.5 and run["lmbricks_anon_gb"] <= 1.5
