"""Reward models on disk: the backbone as an ordinary causal-LM directory plus the head beside it.

A reward model directory is what :func:`lmbricks.nn.save_model` writes for the backbone
(config.json, safetensors, tokenizer, lmbricks.json) plus ``reward_head.safetensors`` holding
``score.weight`` (1, H) (Hugging Face's name for the head of ``*ForSequenceClassification``) and
``reward.json`` (how it was trained). Keeping the backbone an ordinary checkpoint means
``lmbricks merge`` averages reward models as it averages any models (WARM); the heads, one vector
each, are averaged with the same uniform weights beside it (:func:`average_heads`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import CheckpointError
from lmbricks.reward.model import RewardModel

SCORE = "score.weight"
HEAD_FILE = "reward_head.safetensors"


def save_reward_model(
    rm: RewardModel,
    dest: str | Path,
    tokenizer: Any = None,
    force: bool = False,
    info: dict[str, Any] | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write ``rm`` atomically (fp32); ``info`` goes to reward.json.

    Args:
        rm: the reward model.
        dest: the output directory (refused if it exists unless ``force`` and lmbricks wrote it).
        tokenizer: saved beside the weights when given.
        force: replace an earlier output.
        info: training settings recorded in reward.json.
        inputs: the backbone and data files (``dest`` must keep apart from them).

    Returns:
        ``dest``.
    """
    from safetensors.torch import save_file

    from lmbricks.checkpoint import atomic_directory
    from lmbricks.nn.load import write_model_dir

    dest = Path(dest)
    with atomic_directory(dest, force=force, inputs=inputs) as tmp_dir:
        tmp = Path(tmp_dir)
        write_model_dir(
            rm.backbone, tmp, tokenizer, dtype=torch.float32,
            provenance={"command": "lmbricks reward", "recipe": info or {}},
        )  # fmt: skip
        save_file({SCORE: rm.head.weight.detach().to("cpu", torch.float32).contiguous()}, str(tmp / HEAD_FILE))
        (tmp / "reward.json").write_text(json.dumps({"head": "last_token", **(info or {})}, indent=2) + "\n")
    return dest


def read_head(path: str | Path) -> torch.Tensor:
    """The (1, H) head of a reward model directory."""
    from safetensors.torch import load_file

    f = Path(path) / HEAD_FILE
    if not f.exists():
        raise CheckpointError(f"{f}: not found (not a reward model directory)")
    tensors = load_file(str(f))
    if SCORE not in tensors:
        raise CheckpointError(f"{f}: no {SCORE} tensor")
    return tensors[SCORE].float()


def load_reward_model(path: str | Path, device: str = "cpu") -> tuple[RewardModel, Any]:
    """Load a directory written by :func:`save_reward_model` (or a merge of them with its head).

    Returns:
        ``(reward model in eval mode, tokenizer or None)``.
    """
    from lmbricks.nn.load import load_model

    head = read_head(path)
    lm, tokenizer = load_model(path, dtype=torch.float32, device=device, hf_fallback=False)
    rm = RewardModel(lm)
    if tuple(head.shape) != (1, lm.cfg.hidden_size):
        raise CheckpointError(f"{path}: {SCORE} has shape {tuple(head.shape)}, expected (1, {lm.cfg.hidden_size})")
    with torch.no_grad():
        rm.head.weight.copy_(head)
    return rm.to(device).eval(), tokenizer


def average_heads(members: Sequence[str | Path], dest: str | Path, weights: Sequence[float] | None = None) -> Path:
    """Write into ``dest`` the weighted mean of the members' heads (weights normalised to sum 1),
    completing a reward model whose backbone ``lmbricks merge`` (linear) has written there."""
    from safetensors.torch import save_file

    w = torch.tensor(list(weights) if weights is not None else [1.0] * len(members), dtype=torch.float32)
    w = w / w.sum()
    heads = torch.stack([read_head(m) for m in members])  # (M, 1, H)
    mean = (w[:, None, None] * heads).sum(0)
    save_file({SCORE: mean.contiguous()}, str(Path(dest) / HEAD_FILE))
    (Path(dest) / "reward.json").write_text(
        json.dumps({"head": "last_token", "averaged_from": [str(m) for m in members]}, indent=2) + "\n"
    )
    return Path(dest)
