"""Identities of the over-optimisation measures (lmbricks.align.overopt)."""

from __future__ import annotations

import itertools

import pytest
import torch

from lmbricks.align.overopt import bon_expected, bootstrap_mean_ci, win_rate
from lmbricks.errors import ConfigError
from lmbricks.eval.fewshot.scoring import wilson_interval


def _brute(proxy: torch.Tensor, gold: torch.Tensor, n: int) -> torch.Tensor:
    """Mean over every n-subset of the gold reward at the subset's proxy argmax."""
    P, N = proxy.shape
    out = torch.zeros(P, dtype=torch.float64)
    subsets = list(itertools.combinations(range(N), n))
    for i in range(P):
        total = 0.0
        for sub in subsets:
            best = max(sub, key=lambda j: float(proxy[i, j]))
            total += float(gold[i, best])
        out[i] = total / len(subsets)
    return out


def test_bon_expected_is_the_mean_over_all_subsets() -> None:
    gen = torch.Generator().manual_seed(3)
    proxy, gold = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    for n in range(1, 8):
        torch.testing.assert_close(bon_expected(proxy, gold, n), _brute(proxy, gold, n))


def test_bon_expected_ends() -> None:
    gen = torch.Generator().manual_seed(0)
    proxy, gold = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    torch.testing.assert_close(bon_expected(proxy, gold, 1), gold.double().mean(1))
    top = gold.gather(1, proxy.argmax(1, keepdim=True))[:, 0].double()
    torch.testing.assert_close(bon_expected(proxy, gold, 6), top)


def test_bon_expected_of_the_gold_itself_rises_with_n() -> None:
    gold = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    means = [float(bon_expected(gold, gold, n).mean()) for n in (1, 2, 4, 8, 16)]
    assert all(b > a for a, b in zip(means, means[1:], strict=False))


def test_bon_expected_refuses_bad_input() -> None:
    with pytest.raises(ConfigError, match="same"):
        bon_expected(torch.zeros(2, 3), torch.zeros(2, 4), 1)
    with pytest.raises(ConfigError, match="n = 4"):
        bon_expected(torch.zeros(2, 3), torch.zeros(2, 3), 4)


def test_win_rate_counts_and_interval() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 0.0, 5.0])
    b = torch.tensor([0.0, 2.0, 1.0, 1.0, 4.0])
    w = win_rate(a, b)
    assert (w.wins, w.losses, w.ties) == (3, 1, 1)
    assert w.rate == pytest.approx(3.5 / 5)
    assert w.decisive_rate == pytest.approx(3 / 4)
    assert w.ci95 == wilson_interval(3, 4)
    assert win_rate(b, a).wins == 1
    with pytest.raises(ConfigError, match="paired"):
        win_rate(a, b[:3])


def test_bootstrap_interval() -> None:
    lo, hi = bootstrap_mean_ci(torch.full((10,), 2.5))
    assert lo == pytest.approx(2.5) and hi == pytest.approx(2.5)
    v = torch.randn(400, generator=torch.Generator().manual_seed(2))
    lo, hi = bootstrap_mean_ci(v)
    assert lo < float(v.mean()) < hi
    assert hi - lo == pytest.approx(2 * 1.96 * float(v.std()) / 20, rel=0.2)  # the normal interval's width
    small_lo, small_hi = bootstrap_mean_ci(v[:25])
    assert small_hi - small_lo > hi - lo


def test_alignment_doc_table_equals_the_committed_run() -> None:
    import json
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    run = json.loads((docs / "bench" / "overoptimisation-2026-12-07.json").read_text())
    lines = (docs / "alignment.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| n | KL (nats) | single proxy"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    assert [int(r[0]) for r in rows] == run["ns"]
    for i, row in enumerate(rows):
        assert float(row[1]) == pytest.approx(run["curves"]["gold"][i]["kl"], abs=0.005)
        for cell, name in zip(row[2:], ("single_mean", "warm", "ensemble", "gold"), strict=True):
            assert float(cell.split()[0]) == pytest.approx(run["curves"][name][i]["gold"], abs=0.005), (i, name)
