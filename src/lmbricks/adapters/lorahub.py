"""LoraHub: gradient-free search of per-brick weights on a few examples (arXiv 2307.13269).

As in the reference code (sail-sg/lorahub ``algorithm.py``): weights start at 0, live in
[-1.5, 1.5], the objective is the examples' cross-entropy plus ``0.05 * mean |w|``, and nevergrad's
``NGOpt`` spends a budget of 40 evaluations with a fixed seed. The combination is
:func:`~lmbricks.adapters.compose.lorahub_factors` (A and B weighted separately, so the update is
quadratic in the weights).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from pydantic import Field

from lmbricks.adapters.compose import Factors, lorahub_factors
from lmbricks.adapters.hub_adapter import AdapterSlot, mean_nll
from lmbricks.config import settings
from lmbricks.errors import ConfigError


@settings
class LoraHubSettings:
    """Search settings (the defaults are the reference's); a wrong value is a ConfigError naming the field."""

    budget: Annotated[int, Field(ge=1)] = 40
    bound: Annotated[float, Field(gt=0)] = 1.5
    l1: Annotated[float, Field(ge=0)] = 0.05
    seed: int = 42


@dataclass
class LoraHubResult:
    """Best weights found, their objective and loss, and every evaluation made."""

    weights: list[float]
    objective: float
    loss: float
    history: list[tuple[list[float], float]] = field(default_factory=list)


def example_batches(tokenizer: Any, texts: Sequence[str], max_tokens: int = 128) -> list[torch.Tensor]:
    """Tokenise few-shot examples into (1, T) tensors of at most ``max_tokens`` tokens (start token first)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max_tokens - 1]
        if ids:
            out.append(torch.tensor([[int(start), *ids]], dtype=torch.long))
    if not out:
        raise ConfigError("no non-empty few-shot example")
    return out


def lorahub_search(
    slot: AdapterSlot,
    bricks: Sequence[Factors],
    batches: Sequence[torch.Tensor],
    settings: LoraHubSettings = LoraHubSettings(),
    on_eval: Callable[[int, float], None] | None = None,
) -> LoraHubResult:
    """Search LoraHub weights for ``bricks`` on the examples ``batches``.

    Args:
        slot: the base model with a writable adapter slot of the bricks' rank.
        bricks: the bricks' factors (one rank).
        batches: tokenised examples, (1, T) each.
        settings: budget, bound, L1 penalty, seed.
        on_eval: called with ``(evaluation number, objective)``.

    Returns:
        The best :class:`LoraHubResult` (the slot is left holding the best combination).
    """
    import nevergrad as ng
    import numpy as np

    n = len(bricks)
    param = ng.p.Array(init=np.zeros(n), lower=-settings.bound, upper=settings.bound)
    param.random_state = np.random.RandomState(settings.seed)
    optimizer = ng.optimizers.NGOpt(parametrization=param, budget=settings.budget)
    history: list[tuple[list[float], float]] = []

    def objective(w: np.ndarray) -> float:
        weights = [float(x) for x in w]
        slot.set(lorahub_factors(bricks, weights))
        value = mean_nll(slot.model, batches) + settings.l1 * float(np.abs(w).mean())
        history.append((weights, value))
        if on_eval is not None:
            on_eval(len(history), value)
        return value

    with warnings.catch_warnings():
        # nevergrad's COBYLA calls scipy.optimize.minimize with tol=0, which scipy rejects with a warning and
        # replaces by 1e-6: the library's noise, not a setting of ours (the evaluation budget ends the search first).
        warnings.filterwarnings("ignore", message=r"COBYLA: Invalid RHOEND", category=UserWarning)
        recommendation = optimizer.minimize(objective)
    best = [float(x) for x in recommendation.value]
    slot.set(lorahub_factors(bricks, best))
    loss = mean_nll(slot.model, batches)
    return LoraHubResult(
        weights=best,
        objective=loss + settings.l1 * sum(abs(x) for x in best) / n,
        loss=loss,
        history=history,
    )
