"""Sparsification of task vectors (deltas): magnitude top-k, outlier-trimmed, random, DELLA.

Selection by rank never sorts: a rank window is cut with :func:`torch.kthvalue` (linear-time
selection) and ties at a cut value are broken deterministically by flat index, so the kept count
is exactly the requested one and the result never depends on thread scheduling. mergekit uses a
full ``argsort`` and keeps an unspecified subset of tied elements: results can differ only at
elements whose magnitude equals the cut value exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Below this size a plain kthvalue is as fast as the sampled bracket.
_DIRECT_SELECT = 1 << 21
_SAMPLE = 1 << 18


def select_rank(values: torch.Tensor, k: int) -> tuple[float, int, torch.Tensor]:
    """The ``k``-th smallest element (1-based) of a flat fp32 tensor, exactly, without sorting it.

    A strided sample brackets the answer; one comparison pass counts the elements below the
    bracket and gathers those inside it (with their positions), and :func:`torch.kthvalue` finishes
    on that small set. If the bracket misses (it cannot for realistic data, but it is checked),
    falls back to ``kthvalue`` on the whole tensor.

    Args:
        values: 1-D tensor.
        k: rank, ``1 <= k <= values.numel()``.

    Returns:
        ``(value, below, ties)``: the value, the number of elements strictly below it, and the
        sorted flat positions of the elements equal to it.
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
            a, b = sample[lo_rank - 1], sample[hi_rank - 1]
            below_a = int(torch.count_nonzero(values < a))
            inside = (values >= a) & (values <= b)
            pos = inside.nonzero().squeeze(1)
            mid = values[pos]
            if below_a < k <= below_a + mid.numel():
                v = mid.kthvalue(k - below_a).values
                below = below_a + int(torch.count_nonzero(mid < v))
                return float(v), below, pos[mid == v]
    v = values.kthvalue(k).values
    return float(v), int(torch.count_nonzero(values < v)), (values == v).nonzero().squeeze(1)


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


def rank_window(values: torch.Tensor, lo: int, hi: int) -> RankWindow:
    """The :class:`RankWindow` keeping ranks ``[lo, hi)`` of ``values`` (ascending, ties by index).

    Args:
        values: the ranked quantity, e.g. ``|delta|`` (any shape, flattened in C order).
        lo: first kept rank (0-based).
        hi: one past the last kept rank.

    Returns:
        The window; ``window.mask(values)`` has exactly ``hi - lo`` True entries.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    lo_value, lo_index = float("-inf"), 0
    hi_value, hi_index = float("inf"), n
    if lo > 0:
        v, below, ties = select_rank(flat, lo + 1)  # value at rank lo
        # ranks below + j for the j-th tie; drop those with rank < lo
        lo_value, lo_index = v, int(ties[lo - below]) if lo - below < ties.numel() else n
    if hi < n:
        v, below, ties = select_rank(flat, hi)  # value at rank hi - 1
        keep_ties = hi - below  # ties with j < keep_ties have rank < hi
        hi_value = v
        hi_index = int(ties[keep_ties]) if keep_ties < ties.numel() else n
    return RankWindow(lo_value, lo_index, hi_value, hi_index)


def magnitude_window(magnitudes: torch.Tensor, density: float) -> RankWindow | None:
    """The window of the ``max(1, int(density * n))`` largest of ``magnitudes`` (``|delta|``, fp32);
    None means keep all (density >= 1)."""
    n = magnitudes.numel()
    if density >= 1:
        return None
    if density <= 0 or n == 0:
        return RankWindow(float("inf"), 0, float("inf"), 0)  # keeps nothing
    k = max(1, int(density * n))
    return rank_window(magnitudes, n - k, n)


def outlier_window(magnitudes: torch.Tensor, density: float, gamma: float) -> RankWindow | None:
    """Model Breadcrumbs on ``magnitudes`` (``|delta|``, fp32): drop the ``gamma`` fraction of largest
    entries and the smallest ones, keeping ``int(density * n)``; None means keep all."""
    n = magnitudes.numel()
    if density >= 1:
        return None
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    return rank_window(magnitudes, n_bot, n_bot + target)


def rescale_l1(delta: torch.Tensor, kept: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale ``kept`` so its L1 norm equals ``delta``'s (mergekit's ``rescale``); unchanged if either is 0."""
    before = delta.abs().sum()
    after = kept.abs().sum()
    if before < eps or after < eps:
        return kept
    return kept * (before / after)


def bernoulli_mask(shape: torch.Size, density: float, generator: torch.Generator | None) -> torch.Tensor:
    """A 0/1 fp32 mask, each entry 1 with probability ``density`` (DARE's random drop)."""
    probs = torch.full(shape, float(density), dtype=torch.float32)
    return torch.bernoulli(probs, generator=generator)


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
    if not density - epsilon > 0 and density + epsilon < 1:
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
