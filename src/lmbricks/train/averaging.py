"""Weight averaging while training, through ``lmbricks.average``.

EMA and SWA are kept online by :class:`lmbricks.average.WeightAverager` (``torch.optim.swa_utils``
underneath); their state (weights and ``n_averaged``) is saved in each checkpoint so a resumed run
continues the same averages. LAWA (arXiv 2209.14981) averages the last k checkpoints at the end,
with :func:`lmbricks.average.average_checkpoints` (streamed, fp32 accumulation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lmbricks.train.config import AveragingConfig


class Averagers:
    """The online averages a config asks for, keyed "ema" and "swa"."""

    def __init__(self, model: nn.Module, cfg: AveragingConfig) -> None:
        from lmbricks.average import WeightAverager

        self.models: dict[str, Any] = {}
        if cfg.ema_decay is not None:
            self.models["ema"] = WeightAverager(model, "ema", decay=cfg.ema_decay)
        if cfg.swa_start is not None:
            self.models["swa"] = WeightAverager(model, "swa", start_step=cfg.swa_start + 1)

    def __bool__(self) -> bool:
        return bool(self.models)

    def update(self, step: int) -> None:
        """Fold the weights after optimizer step ``step`` (1-based) into each average."""
        for avg in self.models.values():
            avg.update(step)

    def state_dict(self) -> dict[str, Any]:
        return {name: avg.averaged.state_dict() for name, avg in self.models.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, avg in self.models.items():
            avg.averaged.load_state_dict(state[name])

    def averaged(self, name: str) -> nn.Module:
        """The averaged copy of the model."""
        module: nn.Module = self.models[name].module
        return module


def lawa(checkpoints: list[Path], out: Path) -> Path:
    """LAWA: the uniform average of ``checkpoints`` (model directories of one run) written to ``out``."""
    from lmbricks.average import average_checkpoints

    return average_checkpoints(checkpoints, out, force=True)
