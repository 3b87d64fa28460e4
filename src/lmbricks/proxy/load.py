"""Load the members of a proxy-tuning ensemble from model references (and an optional brick)."""

from __future__ import annotations

from pathlib import Path

import torch

from lmbricks.errors import ConfigError
from lmbricks.proxy.decode import Member


def load_member(
    ref: str | Path, chat: bool = False, brick: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> Member:
    """A model (eval) and its tokenizer; with ``brick``, that LoRA brick merged into the weights.

    Args:
        ref: model reference (registry name, directory, .gguf).
        chat: format prompts with the model's chat template.
        brick: a LoRA brick (path or catalogue name) to merge into the weights.
        dtype: the weights' dtype (:func:`lmbricks.runtime.inference_dtype`); the brick is merged in fp32
            first and the merged weights are cast once, so bf16 is fp32's merge rounded.

    Raises:
        ConfigError: the brick was trained on another base model.
    """
    from lmbricks.hub import load_hf_model

    model, tokenizer = load_hf_model(ref)
    if brick is not None:
        from peft import PeftModel

        from lmbricks.adapters.base import base_model, check_brick_base
        from lmbricks.adapters.brick import read_brick
        from lmbricks.adapters.catalogue import find_brick
        from lmbricks.hub.hf_compat import peft_wrapping

        path = find_brick(brick, ref)
        info = read_brick(path)
        check_brick_base(info.name, info.base_sha256, info.base_model, base_model(ref), info.base_identity)
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()
    return Member(model.to(dtype), tokenizer, chat)


def load_trio(
    base: str | Path,
    expert: str | Path | None,
    anti: str | Path | None,
    *,
    expert_brick: str | Path | None = None,
    chat_base: bool = False,
    chat_expert: bool = False,
    chat_anti: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Member, Member | None, Member | None]:
    """Base, expert and anti-expert members (weights in ``dtype``). ``expert_brick`` makes the expert =
    anti-expert + brick."""
    if expert_brick is not None:
        if anti is None:
            raise ConfigError("--expert-brick needs --anti-expert (the expert is the anti-expert plus the brick)")
        expert = expert or anti
    if (expert is None) != (anti is None):
        raise ConfigError("give both --expert and --anti-expert, or neither")
    b = load_member(base, chat_base, dtype=dtype)
    if expert is None or anti is None:
        return b, None, None
    return b, load_member(expert, chat_expert, expert_brick, dtype), load_member(anti, chat_anti, dtype=dtype)
