"""MoE layers <-> Hugging Face per-expert tensor names (Mixtral and Qwen2-MoE on-disk layouts).

On disk (what ``save_pretrained`` writes), layer i's sparse block holds ``gate.weight`` (E, H) and
per expert ``w1``/``w3``/``w2`` (Mixtral) or ``gate_proj``/``up_proj``/``down_proj`` (Qwen2-MoE) in
nn.Linear layout; Qwen2-MoE adds ``shared_expert.*`` and ``shared_expert_gate.weight``. Our
``lmbricks.moe.Experts`` keep contiguous (E, H, 2I) / (E, I, H) tensors. Any other parameter or
buffer of the layer (a noisy router's noise gate, a sigmoid router's bias) is stored as
``<block>.lmbricks.<name>``: transformers does not know it, ``lmbricks.load_model`` restores it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import CheckpointError

_BLOCK = {"mixtral": "block_sparse_moe", "qwen2_moe": "mlp"}
_PROJ = {"mixtral": ("w1", "w3", "w2"), "qwen2_moe": ("gate_proj", "up_proj", "down_proj")}
_SHARED = ("gate_proj", "up_proj", "down_proj")


def _block(family: str) -> str:
    if family not in _BLOCK:
        raise CheckpointError(f"model_type {family!r} has no sparse MoE layout (mixtral, qwen2_moe)")
    return _BLOCK[family]


def moe_state_from_hf(layer: Any, prefix: str, family: str, take: Callable[[str], Tensor]) -> dict[str, Tensor]:
    """The state dict of ``layer`` (an ``lmbricks.moe.MoELayer``) from HF-named tensors.

    Args:
        layer: the MoE layer to fill (its shapes decide what is read).
        prefix: ``"model.layers.{i}."``.
        family: ``mixtral`` or ``qwen2_moe`` (the checkpoint's model_type).
        take: returns a tensor by name and records it as used.

    Returns:
        ``{name in layer.state_dict(): tensor}``.
    """
    b = prefix + _block(family) + "."
    g, u, d = _PROJ[family]
    ex = layer.experts
    out: dict[str, Tensor] = {"router.gate.weight": take(b + "gate.weight")}
    ups, gates, downs = [], [], []
    for e in range(ex.num_experts):
        p = f"{b}experts.{e}."
        if ex.gated:
            gates.append(take(p + f"{g}.weight").t())  # (H, I)
        ups.append(take(p + f"{u}.weight").t())  # (H, I)
        downs.append(take(p + f"{d}.weight").t())  # (I, H)
    if ex.gated:
        out["experts.gate_up"] = torch.stack([torch.cat([gt, up], dim=1) for gt, up in zip(gates, ups, strict=True)])
    else:
        out["experts.up"] = torch.stack(ups)  # (E, H, I)
    out["experts.down"] = torch.stack(downs)  # (E, I, H)
    if layer.shared_expert is not None:
        for name in _SHARED:
            out[f"shared_expert.{name}.weight"] = take(f"{b}shared_expert.{name}.weight")
        if layer.shared_expert.gate is not None:
            out["shared_expert.gate.weight"] = take(b + "shared_expert_gate.weight")
    for name in layer.state_dict():
        if name not in out:
            out[name] = take(f"{b}lmbricks.{name}")
    return out


def moe_state_to_hf(layer: Any, prefix: str, family: str) -> dict[str, Tensor]:
    """``layer``'s tensors under ``family``'s HF names (inverse of :func:`moe_state_from_hf`)."""
    b = prefix + _block(family) + "."
    g, u, d = _PROJ[family]
    ex = layer.experts
    sd = layer.state_dict()
    done = {"router.gate.weight", "experts.down", "experts.gate_up" if ex.gated else "experts.up"}
    out: dict[str, Tensor] = {b + "gate.weight": sd["router.gate.weight"]}
    i = ex.intermediate_size
    for e in range(ex.num_experts):
        p = f"{b}experts.{e}."
        if ex.gated:
            w = sd["experts.gate_up"][e]  # (H, 2I): columns [gate | up]
            out[p + f"{g}.weight"], out[p + f"{u}.weight"] = w[:, :i].t(), w[:, i:].t()
        else:
            out[p + f"{u}.weight"] = sd["experts.up"][e].t()
        out[p + f"{d}.weight"] = sd["experts.down"][e].t()
    if layer.shared_expert is not None:
        for name in _SHARED:
            out[f"{b}shared_expert.{name}.weight"] = sd[f"shared_expert.{name}.weight"]
            done.add(f"shared_expert.{name}.weight")
        if layer.shared_expert.gate is not None:
            out[b + "shared_expert_gate.weight"] = sd["shared_expert.gate.weight"]
            done.add("shared_expert.gate.weight")
    for name, t in sd.items():
        if name not in done:
            out[f"{b}lmbricks.{name}"] = t
    return out
