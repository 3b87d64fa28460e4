"""Passthrough: copy one input's tensor (frankenmerges built from slices)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import Param, blockwise, register_method


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
    del base  # the one input is the term
    out = tensors[0].float()
    s = scale[0] if scale else None
    return out * s if s is not None else out


_PARAMS = (Param("scale", float, per_input=True, default=None, help="optional multiplier"),)


register_method(
    name="passthrough",
    reference="https://github.com/arcee-ai/mergekit#passthrough",
    formula="θ = θ1 (· scale)",
    params=_PARAMS,
    base="none",
    max_models=1,
    chunked=blockwise("passthrough", passthrough, _PARAMS),
)(passthrough)
