"""Forward hooks on FFN blocks: read intermediate activations, or replace them.

Both work through a forward *pre*-hook on the down projection, whose input is the intermediate
activation ``a`` (B, T, I) of any FFN kind. A reading hook returns None, so the model computes
exactly what it computes without hooks; an editing hook returns the edited ``a``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from lmbricks.analysis.ffn import FFNBlock

Reader = Callable[[int, torch.Tensor], None]
Editor = Callable[[int, torch.Tensor], torch.Tensor]


@contextmanager
def tap_activations(
    blocks: Sequence[FFNBlock], on_activation: Reader, on_input: Reader | None = None
) -> Iterator[None]:
    """Call ``on_activation(layer, a)`` with every FFN's intermediate activation, outputs unchanged.

    Args:
        blocks: from :func:`lmbricks.analysis.ffn.find_ffns`.
        on_activation: receives the layer index and ``a`` (..., I); must not modify it in place.
        on_input: if given, receives the layer index and the FFN input ``x`` (..., H).

    Yields:
        Nothing; the hooks are removed when the block ends (also on error).
    """
    handles: list[Any] = []

    def reader(layer: int, fn: Reader) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[torch.Tensor, ...]) -> None:
            fn(layer, args[0].detach())

        return hook

    try:
        for block in blocks:
            handles.append(block.down.register_forward_pre_hook(reader(block.layer, on_activation)))
            if on_input is not None:
                proj = block.gate if block.gate is not None else block.up
                handles.append(proj.register_forward_pre_hook(reader(block.layer, on_input)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def edit_activations(blocks: Sequence[FFNBlock], edit: Editor) -> Iterator[None]:
    """Replace every FFN's intermediate activation ``a`` by ``edit(layer, a)`` (same shape).

    Args:
        blocks: the FFN blocks to edit (others run unchanged).
        edit: returns the activation the down projection receives.

    Yields:
        Nothing; the hooks are removed when the block ends.
    """
    handles: list[Any] = []

    def editor(layer: int) -> Callable[..., tuple[torch.Tensor]]:
        def hook(_module: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            return (edit(layer, args[0]),)

        return hook

    try:
        for block in blocks:
            handles.append(block.down.register_forward_pre_hook(editor(block.layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()
