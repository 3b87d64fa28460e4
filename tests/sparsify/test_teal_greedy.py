"""TEAL's greedy allocation: the path spends sparsity where the error is cheapest, each block reaches the target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.config import validate
from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model
from lmbricks.sparsify.cats import quantile_threshold
from lmbricks.sparsify.evaluate import SparsifyEvalConfig, run_sparsify_eval
from lmbricks.sparsify.teal import teal_sites
from lmbricks.sparsify.teal_greedy import greedy_path, greedy_teal, grid_thresholds, site_weights


def test_the_path_raises_the_cheapest_site_first() -> None:
    costs = [4.0, 1.0, 100.0, 2.0]  # the error of a level is cost * level^2
    calls: list[list[int]] = []

    def error(at: list[int]) -> float:
        calls.append(at)
        return sum(c * a * a for c, a in zip(costs, at, strict=True))

    grid = [0.0, 0.25, 0.5, 0.75]
    path = greedy_path(error, [1, 1, 1, 1], grid, target=0.3)
    # each step the cheapest raise: site 1 (+1), site 3 (+2), site 1 (+3), site 0 (+4), site 1 (+5)
    want = [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 1], [0, 2, 0, 1], [1, 2, 0, 1], [1, 3, 0, 1]]
    assert [p[1] for p in path] == want
    assert [p[0] for p in path] == pytest.approx([0.0, 0.0625, 0.125, 0.1875, 0.25, 0.3125])
    assert path[-1][0] >= 0.3 - 1e-9 and all(a[2] == 0 for _, a in path)  # the costly site never moves
    assert len(calls[0]) == 4


def test_the_path_is_weighted_by_parameters_and_stops_at_the_top() -> None:
    path = greedy_path(lambda at: 0.0, [3, 1], [0.0, 0.5], target=0.9)
    assert path[-1] == (pytest.approx(0.5), [1, 1])  # both sites at the grid's top: it stops short of 0.9
    assert path[1][0] == pytest.approx(0.375)  # site 0 first (ties: the first), weighted 3 of 4


def test_grid_thresholds_are_the_quantiles() -> None:
    m = torch.rand(1001, generator=torch.Generator().manual_seed(0))
    grid = [0.0, 0.05, 0.4, 0.95]
    assert grid_thresholds(m, grid) == [quantile_threshold(m, s) for s in grid]


def test_greedy_teal_reaches_each_target_per_block(tiny_llama: Path) -> None:
    model, _ = load_model(tiny_llama, hf_fallback=False)
    blocks = torch.randint(3, 384, (2, 32), generator=torch.Generator().manual_seed(0))  # (B, T)
    out = greedy_teal(model, blocks, [0.0, 0.25, 0.5], step=0.1)
    n = len(teal_sites(model))
    assert [len(t) for t in out.thresholds] == [n] * 3 and out.thresholds[0] == [0.0] * n
    weights = site_weights(model)
    for target, levels, means in zip([0.0, 0.25, 0.5], out.sparsities, out.block_sparsity, strict=True):
        for b, mean in enumerate(means):
            w = weights[4 * b : 4 * b + 4]
            assert mean == pytest.approx(sum(x * s for x, s in zip(w, levels[4 * b : 4 * b + 4], strict=True)) / sum(w))
            assert target - 1e-9 <= mean < target + 0.1  # reached, within one step of the largest site
    assert len(set(out.sparsities[2])) > 1  # not the uniform allocation
    with pytest.raises(ConfigError, match="targets"):
        greedy_teal(model, blocks, [0.95], step=0.1)


def test_evaluate_with_the_greedy_allocation(tiny_llama: Path, tmp_path: Path) -> None:
    text = tmp_path / "held.txt"
    text.write_text(" ".join(["the cat sat on a red mat and the dog runs fast"] * 300))
    fields = dict(
        model=str(tiny_llama), out=tmp_path / "g", method="teal", keep=[1.0, 0.5], text_files=[text], sequences=1,
        prompt_tokens=16, continuation_tokens=8, calibration_tokens=64, precision="fp32", decode_tokens=0,
    )  # fmt: skip
    result = run_sparsify_eval(SparsifyEvalConfig(**fields, allocation="greedy"))
    assert result.ppl_change["keep=1"]["held"] == 0.0 and result.settings["allocation"] == "greedy"
    assert result.thresholds["keep=1"] == [0.0] * 8 and result.ppl_change["keep=0.5"]["held"] != 0.0
    with pytest.raises(ConfigError, match="allocation"):
        validate(SparsifyEvalConfig, {**fields, "allocation": "best"}, "sparsify evaluate options")
