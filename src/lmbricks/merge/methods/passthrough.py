"""Passthrough: copy one input's tensor (frankenmerges built from slices)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import ChunkedForm, Param, register_method


def passthrough(
    base: torch.Tensor | None, tensors: Sequence[torch.Tensor], *, scale: Sequence[float | None] = (None,)
) -> torch.Tensor:
    """θ = θ1 (times ``scale`` if given).

    Args:
        base: unused.
        tensors: exactly one tensor.
        scale: optional multiplier.

    Returns:
        fp32 tensor.
    """
    out = tensors[0].float()
    s = scale[0] if scale else None
    return out * s if s is not None else out


def _apply(base: torch.Tensor | None, tensors: Sequence[torch.Tensor], *, state: None, offset: int, **kw: object):
    return passthrough(base, tensors, **kw)  # type: ignore[arg-type]


register_method(
    name="passthrough",
    reference="https://github.com/arcee-ai/mergekit#passthrough",
    formula="θ = θ1 (· scale)",
    params=(Param("scale", float, per_input=True, default=None, help="optional multiplier"),),
    base="none",
    max_models=1,
    chunked=ChunkedForm(lambda *a, **k: None, _apply),
)(passthrough)
