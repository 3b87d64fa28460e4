"""Averaging: online SWA/EMA during training, offline checkpoint averaging (LAWA), model soups."""

from lmbricks.average.offline import average_checkpoints, ema_weights, last_k_checkpoints
from lmbricks.average.online import WeightAverager
from lmbricks.average.soup import EvalFn, SoupResult, perplexity_evaluator, soup_models

__all__ = [
    "EvalFn",
    "SoupResult",
    "WeightAverager",
    "average_checkpoints",
    "ema_weights",
    "last_k_checkpoints",
    "perplexity_evaluator",
    "soup_models",
]
