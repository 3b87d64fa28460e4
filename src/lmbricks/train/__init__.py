"""Training small dense and MoE language models: config, schedules, loop, checkpoints, planning."""

from __future__ import annotations

from lmbricks.train.config import TrainConfig, load_config, parse_config
from lmbricks.train.loop import TrainResult, train
from lmbricks.train.schedule import lr_multiplier

__all__ = ["TrainConfig", "TrainResult", "load_config", "lr_multiplier", "parse_config", "train"]
