"""Customized bricks: LoRA adapters that are trained, catalogued, composed, routed, updated and extracted.

- ``pipeline.py``: the commands' pipelines (train, update, compose, route, evaluate routing), each a
  typed config in and a typed result out; ``survey.py``: effect table, routing and a LoraHub mix.
- :func:`train_brick` / :func:`update_brick`: PEFT LoRA training on a corpus domain (``train.py``,
  data order in ``train_data.py``).
- :func:`read_brick`, :func:`load_factors`, :func:`save_factors`: the on-disk brick (``brick.py``).
- :class:`Catalogue`: bricks registered per base model, with their measured effect (``catalogue.py``).
- ``compose.py``: cat (exact), svd, linear, ties, dare, and LoraHub weights (``lorahub.py``).
- ``route.py``: pick bricks per input by the nearest domain centroid of base hidden states.
- ``extract.py``: a LoRA brick from the SVD of a full fine-tune's delta.
"""

from __future__ import annotations

from lmbricks.adapters.base import BaseModel, base_model, check_brick_base
from lmbricks.adapters.brick import BrickInfo, LoraPair, load_factors, read_brick, save_factors
from lmbricks.adapters.config import DEFAULT_TARGETS, LoraTrainConfig, make_config
from lmbricks.adapters.train import train_brick, update_brick

__all__ = [
    "DEFAULT_TARGETS",
    "BaseModel",
    "BrickInfo",
    "LoraPair",
    "LoraTrainConfig",
    "base_model",
    "check_brick_base",
    "load_factors",
    "make_config",
    "read_brick",
    "save_factors",
    "train_brick",
    "update_brick",
]
