"""Best-of-n: draw n responses, keep the one the reward ranks highest (pure functions of the scores).

The policy that best-of-n defines has a KL divergence from the sampling policy of
``log n - (n - 1) / n`` nats (the analytic form used by arXiv 2210.10760 and 2009.01325; exact for
continuous rewards without ties). One set of ``max(ns)`` samples per prompt serves every n: best-of-n
uses the first n of them, so the curve over n is monotone in expectation and cheap to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lmbricks.errors import ConfigError


def bon_kl(n: int) -> float:
    """KL(best-of-n || policy) = log n - (n - 1) / n, in nats (0 for n = 1)."""
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


@dataclass
class BestOfN:
    """Best-of-n for one n: which sample won per prompt, its reward, and their mean."""

    n: int
    kl: float  # nats, :func:`bon_kl`
    picks: list[int]  # (P,) index of the winning sample among the first n
    rewards: list[float]  # (P,) the winner's reward
    mean_reward: float
    stderr: float  # standard error of the mean over prompts

    def to_dict(self) -> dict[str, float | int]:
        """``{"n", "kl", "mean_reward", "stderr"}``."""
        return {"n": self.n, "kl": self.kl, "mean_reward": self.mean_reward, "stderr": self.stderr}


def best_of_n(scores: Tensor, ns: Sequence[int]) -> list[BestOfN]:
    """Best-of-n for each n from a (P, N) table of rewards (prompt i, sample j).

    Ties go to the earliest sample (``argmax``'s first maximum), so best-of-1 is sample 0.

    Args:
        scores: (P, N) rewards, N >= max(ns).
        ns: the n values.

    Returns:
        One :class:`BestOfN` per n, in the order given.

    Raises:
        ConfigError: an n below 1 or above N.
    """
    P, N = scores.shape
    out = []
    for n in ns:
        if not 1 <= n <= N:
            raise ConfigError(f"n = {n}: needs 1 <= n <= {N} samples per prompt")
        top = scores[:, :n]  # (P, n)
        picks = top.argmax(dim=1)  # (P,)
        won = top.gather(1, picks[:, None])[:, 0].double()  # (P,)
        err = float(won.std(unbiased=True) / math.sqrt(P)) if P > 1 else float("nan")
        out.append(BestOfN(n, bon_kl(n), picks.tolist(), won.tolist(), float(won.mean()), err))
    return out


def parse_ns(text: str) -> list[int]:
    """``"1,2,4,64"`` -> [1, 2, 4, 64] (sorted, unique).

    Raises:
        ConfigError: an entry that is not a positive integer.
    """
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ConfigError(f"--n: {part!r} is not a positive integer (give e.g. 1,2,4,8)")
        out.add(int(part))
    return sorted(out)


def score_table(flat: Tensor, prompts: int, n: int) -> Tensor:
    """(P * n,) prompt-major scores -> (P, n)."""
    return torch.as_tensor(flat, dtype=torch.float32).reshape(prompts, n)
