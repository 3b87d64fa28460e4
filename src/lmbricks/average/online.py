"""Online weight averaging during training: SWA and EMA on ``torch.optim.swa_utils``.

The trainer owns one :class:`WeightAverager` and calls :meth:`WeightAverager.update` after each
optimiser step; evaluation and the final save use :attr:`WeightAverager.module`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lmbricks.errors import ConfigError


class WeightAverager:
    """SWA (uniform running mean) or EMA of a model's weights.

    Args:
        model: the model being trained (left untouched).
        mode: ``"swa"`` (equal weight to every update) or ``"ema"`` (``θ̄ ← d·θ̄ + (1-d)·θ``).
        decay: EMA decay ``d``.
        start_step: updates before this step are ignored (SWA usually starts late in training).
        every: average every ``every`` steps.
        use_buffers: also average buffers (e.g. norm statistics) instead of copying them.

    Example:
        >>> avg = WeightAverager(model, "ema", decay=0.999)  # doctest: +SKIP
        >>> for step in range(steps):  # doctest: +SKIP
        ...     train_step(); avg.update(step)
        >>> avg.module.save_pretrained("out/ema")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        mode: Literal["swa", "ema"] = "ema",
        decay: float = 0.999,
        start_step: int = 0,
        every: int = 1,
        use_buffers: bool = True,
    ) -> None:
        if mode not in ("swa", "ema"):
            raise ConfigError(f"averaging mode must be 'swa' or 'ema', got {mode!r}")
        if mode == "ema" and not 0 <= decay < 1:
            raise ConfigError(f"ema decay must lie in [0, 1), got {decay}")
        if every < 1:
            raise ConfigError(f"every must be >= 1, got {every}")
        self.mode = mode
        self.start_step = start_step
        self.every = every
        fn = get_ema_multi_avg_fn(decay) if mode == "ema" else None
        self.averaged = AveragedModel(model, multi_avg_fn=fn, use_buffers=use_buffers)
        self._model = model

    def update(self, step: int) -> bool:
        """Fold the model's current weights into the average if ``step`` qualifies.

        Returns:
            Whether an update happened.
        """
        if step < self.start_step or (step - self.start_step) % self.every:
            return False
        self.averaged.update_parameters(self._model)
        return True

    @property
    def n_averaged(self) -> int:
        """Number of updates folded in so far."""
        return int(self.averaged.n_averaged.item())

    @property
    def module(self) -> Any:
        """The averaged model (same class as the trained one, e.g. a transformers model)."""
        return self.averaged.module

    def averaged_copy(self) -> Any:
        """A detached deep copy of the averaged model (for saving while training goes on)."""
        return copy.deepcopy(self.averaged.module)

    def state_dict(self) -> dict[str, Any]:
        """For exact resume: the averaged weights and the update count."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
