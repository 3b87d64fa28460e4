"""Measuring reward over-optimisation: best-of-n judged by a gold reward, win rates, intervals.

Pure functions of score tables, used by ``scripts/overoptimisation.py`` (arXiv 2210.10760's
best-of-n setting, arXiv 2401.12187's WARM claim):

- :func:`bon_expected`: the expected gold reward of best-of-n under a proxy, averaged over every
  n-subset of the N samples drawn (lower variance than using only the first n samples);
- :func:`bootstrap_mean_ci`: a percentile bootstrap interval of a mean over prompts;
- :func:`win_rate`: head-to-head wins of one policy's responses over another's under the gold
  reward, with a Wilson interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.eval.fewshot.scoring import wilson_interval


def bon_expected(proxy: Tensor, gold: Tensor, n: int) -> Tensor:
    """Expected gold reward of the proxy's best-of-n pick, over all n-subsets of the N samples.

    With the samples of a prompt sorted by proxy score (best first), the sample of rank k is the
    pick of a uniformly drawn n-subset with probability C(N-1-k, n-1) / C(N, n). Proxy ties are
    broken towards the earlier sample.

    Args:
        proxy: (P, N) proxy rewards (prompt i, sample j).
        gold: (P, N) gold rewards of the same samples.
        n: subset size, 1 <= n <= N.

    Returns:
        (P,) float64 expected gold reward of best-of-n per prompt (n = 1: the mean gold reward).

    Raises:
        ConfigError: shapes differ, or n is outside [1, N].
    """
    if proxy.shape != gold.shape or proxy.dim() != 2:
        raise ConfigError(f"proxy {tuple(proxy.shape)} and gold {tuple(gold.shape)} must be the same (P, N)")
    N = proxy.shape[1]
    if not 1 <= n <= N:
        raise ConfigError(f"n = {n}: needs 1 <= n <= {N} samples per prompt")
    # stable sort: among equal proxy scores the earlier sample ranks first
    order = torch.sort(proxy.double(), dim=1, descending=True, stable=True).indices  # (P, N)
    ranked = gold.double().gather(1, order)  # (P, N) gold of rank 0 (best proxy) .. N-1
    w = torch.tensor([math.comb(N - 1 - k, n - 1) for k in range(N)], dtype=torch.float64) / math.comb(N, n)
    return ranked @ w  # (P,)


def bootstrap_mean_ci(values: Tensor, reps: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (P,), resampling its entries.

    Returns:
        (low, high); (nan, nan) for fewer than 2 values.
    """
    v = values.double().flatten()
    if v.numel() < 2:
        return float("nan"), float("nan")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (reps, v.numel()), generator=gen)  # (reps, P)
    means = v[idx].mean(1)  # (reps,)
    a = (1 - level) / 2
    return float(torch.quantile(means, a)), float(torch.quantile(means, 1 - a))


@dataclass
class WinRate:
    """Head-to-head of A over B: ``rate`` counts a tie as half a win; ``ci95`` is the Wilson interval
    of the wins among decisive comparisons (ties left out)."""

    wins: int
    losses: int
    ties: int
    rate: float
    decisive_rate: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready record."""
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties, "rate": self.rate,
                "decisive_rate": self.decisive_rate, "ci95": list(self.ci95)}  # fmt: skip


def win_rate(a: Tensor, b: Tensor) -> WinRate:
    """Wins of A over B from paired gold rewards ``a`` and ``b`` (both (K,)); equal values tie.

    Raises:
        ConfigError: shapes differ or nothing to compare.
    """
    if a.shape != b.shape or a.numel() == 0:
        raise ConfigError(f"win rate needs paired, non-empty rewards, got {tuple(a.shape)} and {tuple(b.shape)}")
    wins, losses = int((a > b).sum()), int((a < b).sum())
    ties = a.numel() - wins - losses
    decisive = wins + losses
    return WinRate(wins, losses, ties, (wins + 0.5 * ties) / a.numel(),
                   wins / decisive if decisive else float("nan"), wilson_interval(wins, decisive))  # fmt: skip
