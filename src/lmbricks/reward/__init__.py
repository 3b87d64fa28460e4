"""Reward models: a scalar head on a causal LM, Bradley-Terry training, preference pairs, WARM.

- :mod:`.pairs`: the preference JSONL schema and built-in pairs from the local corpora.
- :mod:`.loss`: the Bradley-Terry loss and pairwise accuracy.
- :mod:`.model`: :class:`RewardModel` (last-token score), split into a frozen trunk and trained top.
- :mod:`.train`: training on cached trunk features.
- :mod:`.io`: save / load as Hugging Face ``*ForSequenceClassification`` directories.
- :mod:`.warm`: weight-averaged reward models (WARM) against members and their ensemble.
- :mod:`.pipeline`: typed jobs and results for ``lmbricks reward train | eval | warm``, which call them.
"""

from __future__ import annotations

from lmbricks.reward.io import average_heads, load_reward_model, read_head, save_reward_model
from lmbricks.reward.loss import bradley_terry_loss, pair_accuracy
from lmbricks.reward.model import RewardModel, pad_right
from lmbricks.reward.pairs import (
    BUILTIN,
    Pair,
    builtin_pairs,
    champ_pairs,
    corrupt_number,
    dialogue_pairs,
    load_pairs,
    parse_pairs,
    read_pairs,
    write_pairs,
)
from lmbricks.reward.train import RewardTrainConfig, encode_pairs, precompute, score_features, train_on_features
from lmbricks.reward.warm import average_states, base_reward_model, run_warm, train_reward_model

__all__ = [
    "BUILTIN",
    "Pair",
    "RewardModel",
    "RewardTrainConfig",
    "average_heads",
    "average_states",
    "base_reward_model",
    "bradley_terry_loss",
    "builtin_pairs",
    "champ_pairs",
    "corrupt_number",
    "dialogue_pairs",
    "encode_pairs",
    "load_pairs",
    "load_reward_model",
    "pad_right",
    "pair_accuracy",
    "parse_pairs",
    "precompute",
    "read_head",
    "read_pairs",
    "run_warm",
    "save_reward_model",
    "score_features",
    "train_on_features",
    "train_reward_model",
    "write_pairs",
]
