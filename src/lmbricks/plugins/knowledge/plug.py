"""Plug a knowledge brick into a transformers model, and unplug it: the base weights are never written.

PEFT wraps each target projection in a LoRA layer that adds ``scale * B A x`` beside the frozen
``W x``; unplugging swaps the original modules back (``unload`` without merging), so the base's
logits afterwards are the base's logits bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmbricks.adapters.base import BaseModel, check_brick_base
from lmbricks.adapters.brick import read_brick


@contextmanager
def plugged(model: Any, brick: Path, base: BaseModel) -> Iterator[Any]:
    """Plug the knowledge brick ``brick`` into ``model`` for the duration of the block.

    Args:
        model: a transformers causal LM (the base, loaded by :func:`lmbricks.hub.load_hf_model`).
        brick: one plug-in's brick directory.
        base: the identity of ``model``; a brick recorded for another base is refused before plugging.

    Yields:
        The PEFT-wrapped model (call it like ``model``).

    Raises:
        ConfigError: the brick was trained on another base model (names what differs).
    """
    from peft import PeftModel

    from lmbricks.hub.hf_compat import peft_wrapping

    info = read_brick(brick)
    check_brick_base(info.name, info.base_sha256, info.base_model, base, info.base_identity)
    with peft_wrapping():
        wrapped = PeftModel.from_pretrained(model, str(brick))
    wrapped.eval()
    try:
        yield wrapped
    finally:
        wrapped.unload()  # the original Linear modules go back in place; nothing was merged
