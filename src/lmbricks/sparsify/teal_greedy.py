"""TEAL's greedy per-block sparsity allocation (arXiv 2408.14690, its block-wise greedy optimisation).

The uniform allocation (:func:`lmbricks.sparsify.teal.calibrate_teal`) zeroes the same fraction of
every thresholded input. TEAL's greedy search instead spends a block's sparsity where it hurts the
block's output least. For each block on its own, starting from sparsity 0 at its four sites
(:data:`lmbricks.sparsify.teal.SITES`), each step tries raising one site's sparsity by ``step``,
runs the block on its dense-model input with the candidate thresholds, and keeps the candidate
whose output is nearest the dense block's output (squared error); the steps trace a path of
allocations, and a target sparsity takes the first allocation on the path whose mean sparsity,
weighted by the parameters each site's input feeds (qkv, o, gate_up, down), reaches it. So at a
target s, every block skips the same share of its weights as the uniform allocation, spread
differently. Thresholds are the quantiles of each site's ``|x|`` on the dense model's calibration
inputs, as in the uniform case (the same values at the same sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM
from lmbricks.sparsify.cats import site_samples
from lmbricks.sparsify.teal import Teal, teal_sites


@dataclass
class GreedyAllocation:
    """What :func:`greedy_teal` returns.

    Attributes:
        thresholds: per target sparsity (in the order asked), one threshold per site of :func:`teal_sites`.
        sparsities: the same, each site's sparsity level (on the calibration inputs).
        block_sparsity: the same, each block's parameter-weighted mean sparsity (>= the target).
    """

    thresholds: list[list[float]]
    sparsities: list[list[float]]
    block_sparsity: list[list[float]]


def site_weights(model: LM) -> list[int]:
    """Per site of :func:`teal_sites`, the parameters of the projection(s) reading its input (4 per block)."""
    out = []
    for b in range(len(teal_sites(model)) // 4):
        block: Any = model.layers[b]
        out += [block.attn.qkv.weight.numel(), block.attn.o.weight.numel()]
        out += [block.ffn.gate_up.weight.numel(), block.ffn.down.weight.numel()]
    return out


def grid_thresholds(magnitudes: Tensor, grid: list[float]) -> list[float]:
    """``quantile_threshold`` of ``magnitudes`` (N,) at each sparsity of ``grid`` (one sort)."""
    ordered = magnitudes.float().sort().values
    ks = [int(round(s * ordered.numel())) for s in grid]
    return [0.0 if k == 0 else float(ordered[k - 1]) for k in ks]


def _block_inputs(model: LM, row: Tensor) -> list[tuple[Tensor, Any]]:
    """Each block's (input (1, T, H), LayerInputs) in a dense forward of ``row`` (1, T)."""
    seen: list[tuple[Tensor, Any]] = []
    handles = [b.register_forward_pre_hook(lambda _m, args: seen.append((args[0], args[1]))) for b in model.layers]
    try:
        model.hidden_states(row)
    finally:
        for h in handles:
            h.remove()
    return seen


def greedy_path(error: Any, weights: list[int], grid: list[float], target: float) -> list[tuple[float, list[int]]]:
    """The greedy path of one block: (weighted mean sparsity, level index per site) after each step.

    Args:
        error: ``error(levels per site) -> float``, the block's output error at those levels.
        weights: parameters per site (the mean's weights).
        grid: the sparsity of each level (increasing from 0).
        target: stop once the weighted mean sparsity reaches it.

    Returns:
        The path from all zeros; its last mean is >= ``target`` unless every site is at the top.
    """
    total = float(sum(weights))
    at = [0] * len(weights)
    path = [(0.0, list(at))]
    while path[-1][0] < target - 1e-9:
        options = [j for j in range(len(at)) if at[j] + 1 < len(grid)]
        if not options:
            break
        best = min(options, key=lambda j: error([a + (i == j) for i, a in enumerate(at)]))
        at[best] += 1
        path.append((sum(w * grid[a] for w, a in zip(weights, at, strict=True)) / total, list(at)))
    return path


def _block_error(model: LM, b: int, table: list[list[float]], x: Tensor, inputs: Any) -> Any:
    """``error(levels of block b's 4 sites)``: squared distance of block b's output on ``x`` from its dense output."""
    block = model.layers[b]
    ref = block(x, inputs)[0].float()  # (1, T, H)

    def error(at: list[int]) -> float:
        thresholds = [0.0] * len(table)
        thresholds[4 * b : 4 * b + 4] = [table[4 * b + j][a] for j, a in enumerate(at)]
        with Teal(model, thresholds):
            return float((block(x, inputs)[0].float() - ref).square().sum())

    return error


@torch.no_grad()
def greedy_teal(model: LM, blocks: Tensor, targets: list[float], step: float = 0.05) -> GreedyAllocation:
    """TEAL's greedy allocation at each target sparsity (module docstring).

    Args:
        model: lmbricks' LM with dense gated FFNs.
        blocks: (B, T) calibration token ids: every row gives the thresholds' magnitudes, the first
            row the block inputs the greedy search scores on.
        targets: mean sparsities, each in [0, 1 - step).
        step: the sparsity increment of one greedy step (the grid 0, step, 2 step, ... < 1).

    Raises:
        ConfigError: a target outside [0, 1 - step), or a step outside (0, 0.5].
    """
    if not 0 < step <= 0.5 or any(not 0 <= t < 1 - step for t in targets):
        raise ConfigError(f"targets: each in [0, {1 - step:g}) with step {step:g} in (0, 0.5], got {targets}")
    sites = teal_sites(model)
    grid = [i * step for i in range(int(round(1 / step)))]  # 0 .. < 1
    table = [grid_thresholds(s, grid) for s in site_samples(model, blocks, sites, lambda _m, x: x.abs())]
    weights = site_weights(model)
    out = GreedyAllocation([[] for _ in targets], [[] for _ in targets], [[] for _ in targets])
    for b, (x, inputs) in enumerate(_block_inputs(model, blocks[:1])):
        path = greedy_path(_block_error(model, b, table, x, inputs), weights[4 * b : 4 * b + 4], grid, max(targets))
        for i, target in enumerate(targets):
            mean, at = next((p for p in path if p[0] >= target - 1e-9), path[-1])
            out.thresholds[i] += [table[4 * b + j][a] for j, a in enumerate(at)]
            out.sparsities[i] += [grid[a] for a in at]
            out.block_sparsity[i].append(mean)
    return out
