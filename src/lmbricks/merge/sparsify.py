"""Sparsification of task vectors (deltas): magnitude top-k, outlier-trimmed, random, DELLA.

Selection by rank never sorts: a rank window is cut with :func:`torch.kthvalue` (linear-time
selection) and ties at a cut value are broken deterministically by flat index, so the kept count
is exactly the requested one and the result never depends on thread scheduling. mergekit uses a
full ``argsort`` and keeps an unspecified subset of tied elements: results can differ only at
elements whose magnitude equals the cut value exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Below this size a plain kthvalue is as fast as the sampled bracket.
_DIRECT_SELECT = 1 << 21
_SAMPLE = 1 << 18


def select_rank(values: torch.Tensor, k: int) -> tuple[float, int, int]:
    """The ``k``-th smallest element (1-based) of a flat fp32 tensor, exactly, without sorting it.

    A strided sample brackets the answer; one pass counts the elements below the bracket and
    gathers those inside it, and :func:`torch.kthvalue` finishes on that small set. When the
    bracket collapses to one value (heavily tied data, e.g. bf16 deltas that are mostly exactly 0)
    the answer is that value and no gather is needed. If the bracket misses (it cannot for
    realistic data, but it is checked), falls back to ``kthvalue`` on the whole tensor.

    Args:
        values: 1-D tensor.
        k: rank, ``1 <= k <= values.numel()``.

    Returns:
        ``(value, below, equal)``: the value, the number of elements strictly below it and the
        number equal to it (their positions: :func:`tie_position`).
    """
    n = values.numel()
    if n > _DIRECT_SELECT:
        stride = n // _SAMPLE
        sample = values[::stride].sort().values
        m = sample.numel()
        q = (k - 0.5) / n
        margin = 6 * math.sqrt(q * (1 - q) / m) + 2 / m
        lo_rank = int((q - margin) * m)
        hi_rank = math.ceil((q + margin) * m)
        if lo_rank >= 1 and hi_rank <= m:
            a, b = float(sample[lo_rank - 1]), float(sample[hi_rank - 1])
            below_a = int(torch.count_nonzero(values < a))
            if a == b:
                equal = int(torch.count_nonzero(values == a))
                if below_a < k <= below_a + equal:
                    return a, below_a, equal
            else:
                mid = values[(values >= a) & (values <= b)]
                if below_a < k <= below_a + mid.numel():
                    v = mid.kthvalue(k - below_a).values
                    return float(v), below_a + int(torch.count_nonzero(mid < v)), int(torch.count_nonzero(mid == v))
    v = values.kthvalue(k).values
    return float(v), int(torch.count_nonzero(values < v)), int(torch.count_nonzero(values == v))


def tie_position(values: torch.Tensor, value: float, j: int) -> int:
    """Flat index of the ``j``-th (0-based) element of ``values`` equal to ``value``."""
    return int((values == value).nonzero()[j, 0])


def kth_smallest(values: torch.Tensor, k: int) -> float:
    """The ``k``-th smallest element (1-based) of a flat tensor (see :func:`select_rank`)."""
    return select_rank(values, k)[0]


@dataclass(frozen=True)
class RankWindow:
    """Keep the elements whose rank, in the total order (value, flat index), lies in ``[lo, hi)``.

    Stored as cut values plus a flat-index cutoff among the elements equal to each cut value, so
    a mask can be computed block by block (:meth:`mask`) without the whole tensor.
    """

    lo_value: float  # elements below are dropped (-inf: none)
    lo_index: int  # elements == lo_value with flat index < lo_index are dropped
    hi_value: float  # elements above are dropped (+inf: none)
    hi_index: int  # elements == hi_value with flat index >= hi_index are dropped

    def mask(self, values: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Boolean mask of the kept elements of a block.

        Args:
            values: a block of the ranked values (any shape), contiguous in flat order.
            offset: flat index of the block's first element in the whole tensor.

        Returns:
            bool tensor shaped like ``values``.
        """
        inf = float("inf")
        lo, hi = self.lo_value, self.hi_value
        if lo == -inf:
            keep = values < hi
        elif hi == inf:
            keep = values > lo
        else:
            keep = (values > lo) & (values < hi)
        flat_keep = keep.reshape(-1)
        flat = values.reshape(-1)
        n = flat.numel()
        # kept ties of the lower cut are those at flat positions >= lo_index: a suffix of the
        # block; kept ties of the upper cut, positions < hi_index: a prefix.
        start = min(max(self.lo_index - offset, 0), n)
        stop = min(max(self.hi_index - offset, 0), n)
        if lo == hi:
            if lo not in (inf, -inf) and start < stop:
                flat_keep[start:stop] |= flat[start:stop] == lo
        else:
            if lo != -inf and start < n:
                flat_keep[start:] |= flat[start:] == lo
            if hi != inf and stop > 0:
                flat_keep[:stop] |= flat[:stop] == hi
        return keep


def rank_window(values: torch.Tensor, lo: int, hi: int, zero_is_free: bool = False) -> RankWindow:
    """The :class:`RankWindow` keeping ranks ``[lo, hi)`` of ``values`` (ascending, ties by index).

    Args:
        values: the ranked quantity, e.g. ``|delta|`` (any shape, flattened in C order).
        lo: first kept rank (0-based).
        hi: one past the last kept rank.
        zero_is_free: the values are magnitudes whose zero entries contribute nothing however they
            are masked; a lower cut at exactly 0 then drops all zeros instead of locating the
            cut among the (often millions of) tied zeros. The masked product is unchanged.

    Returns:
        The window; ``window.mask(values)`` has exactly ``hi - lo`` True entries (with
        ``zero_is_free``, possibly fewer, by zeros only).
    """
    flat = values.reshape(-1)
    return window_of_ranks(
        flat.numel(),
        lo,
        hi,
        lambda k: select_rank(flat, k),
        lambda v, j: tie_position(flat, v, j),
        zero_is_free,
    )


def window_of_ranks(
    n: int,
    lo: int,
    hi: int,
    select: Callable[[int], tuple[float, int, int]],
    tie: Callable[[float, int], int],
    zero_is_free: bool = False,
) -> RankWindow:
    """:func:`rank_window` over any ranked quantity of ``n`` elements, given its selection functions.

    Args:
        n: number of elements.
        lo: first kept rank (0-based).
        hi: one past the last kept rank.
        select: ``k -> (value, below, equal)`` of the ``k``-th smallest (1-based), as :func:`select_rank`.
        tie: ``(value, j) -> flat index`` of the ``j``-th element equal to ``value``.
        zero_is_free: see :func:`rank_window`.
    """
    if lo >= hi:  # an empty window (density 0): keep nothing, select nothing
        return RankWindow(float("inf"), 0, float("inf"), 0)
    lo_value, lo_index = float("-inf"), 0
    hi_value, hi_index = float("inf"), n
    if lo > 0:
        v, below, equal = select(lo + 1)  # value at rank lo
        # the j-th tie has rank below + j; drop those with rank < lo
        lo_value = v
        drop = lo - below
        if zero_is_free and v == 0:
            lo_index = n
        elif drop == 0:
            lo_index = 0
        else:
            lo_index = tie(v, drop) if drop < equal else n
    if hi < n:
        v, below, equal = select(hi)  # value at rank hi - 1
        keep_ties = hi - below  # ties with j < keep_ties have rank < hi
        hi_value = v
        hi_index = tie(v, keep_ties) if keep_ties < equal else n
    return RankWindow(lo_value, lo_index, hi_value, hi_index)


def magnitude_ranks(n: int, density: float) -> tuple[int, int] | None:
    """Ranks ``[lo, hi)`` kept by a top-``density`` magnitude trim of ``n`` elements (None: keep all;
    ``max(1, int(density * n))`` kept, as mergekit)."""
    if density >= 1:
        return None
    if density <= 0 or n == 0:
        return (n, n)
    return (n - max(1, int(density * n)), n)


def outlier_ranks(n: int, density: float, gamma: float) -> tuple[int, int] | None:
    """Ranks kept by Model Breadcrumbs: drop the ``gamma`` fraction of largest entries and the
    smallest ones, keeping ``int(density * n)`` (None: keep all)."""
    if density >= 1:
        return None
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    return (n_bot, n_bot + target)


def magnitude_window(magnitudes: torch.Tensor, density: float) -> RankWindow | None:
    """The window of the ``max(1, int(density * n))`` largest of ``magnitudes`` (``|delta|``, fp32);
    None means keep all (density >= 1)."""
    ranks = magnitude_ranks(magnitudes.numel(), density)
    if ranks is None:
        return None
    if ranks[0] == ranks[1]:
        return RankWindow(float("inf"), 0, float("inf"), 0)  # keeps nothing
    return rank_window(magnitudes, *ranks, zero_is_free=True)


def outlier_window(magnitudes: torch.Tensor, density: float, gamma: float) -> RankWindow | None:
    """Model Breadcrumbs on ``magnitudes`` (``|delta|``, fp32): drop the ``gamma`` fraction of largest
    entries and the smallest ones, keeping ``int(density * n)``; None means keep all."""
    ranks = outlier_ranks(magnitudes.numel(), density, gamma)
    return None if ranks is None else rank_window(magnitudes, *ranks, zero_is_free=True)


def della_probabilities(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA MagPrune keep-probabilities: rank by magnitude within each row, map ranks linearly
    onto ``[density - epsilon, density + epsilon]`` (smallest to largest).

    Args:
        delta: the task vector; 1-D tensors are one row.
        density: mean keep probability.
        epsilon: half-width of the probability range.

    Returns:
        fp32 probabilities shaped ``(rows, cols)`` (1-D input: ``(1, n)``).
    """
    if not (density - epsilon > 0 and density + epsilon < 1):
        raise ValueError(f"della: density ± epsilon must lie in (0, 1), got {density} ± {epsilon}")
    mags = delta.float().abs()
    if mags.dim() < 2:
        mags = mags.unsqueeze(0)
    mags = mags.reshape(mags.shape[0], -1)
    cols = mags.shape[1]
    order = torch.argsort(mags, dim=1, stable=True)
    ranks = torch.empty_like(mags)
    ranks.scatter_(1, order, torch.arange(cols, dtype=torch.float32).expand_as(mags).contiguous())
    rank_norm = ranks / (cols - 1) if cols > 1 else torch.zeros_like(ranks)
    return (density - epsilon) + rank_norm * (2 * epsilon)
