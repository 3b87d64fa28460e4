"""Hugging Face MoE interop: Mixtral / Qwen2-MoE config fields, and their sparse MoE blocks into an MoELayer.

The blocks are transformers >= 5 fused experts. :data:`HF_MOE_KEYS` is the one table of config.json
keys, read by :func:`moe_fields_from_hf` and written by ``lmbricks.nn.hf.config_to_hf``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lmbricks.errors import ConfigError
from lmbricks.moe.config import MoEConfig
from lmbricks.moe.layer import MoELayer, build_moe
from lmbricks.moe.shared import SharedExpert

#: The config.json key of each MoEConfig field, per Hugging Face MoE family (both directions).
HF_MOE_KEYS: dict[str, dict[str, str]] = {
    "mixtral": {
        "num_experts": "num_local_experts",
        "top_k": "num_experts_per_tok",
        "intermediate_size": "intermediate_size",
    },
    "qwen2_moe": {
        "num_experts": "num_experts",
        "top_k": "num_experts_per_tok",
        "intermediate_size": "moe_intermediate_size",
        "shared_expert_intermediate_size": "shared_expert_intermediate_size",
    },
}
#: Keys a config.json may leave out, with the value Hugging Face assumes.
_HF_DEFAULTS = {"shared_expert_intermediate_size": 0}


def moe_fields_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The MoEConfig fields (all but ``hidden_size``) of a Mixtral or Qwen2-MoE config.json.

    Args:
        hf: the parsed config.json (or ``PretrainedConfig.to_dict()``), with its ``model_type``.

    Returns:
        ``num_experts``, ``top_k``, ``intermediate_size``, ``router``, ``renormalize`` (Mixtral
        renormalises the top-k gates, Qwen2-MoE as ``norm_topk_prob`` says) and, for Qwen2-MoE,
        ``shared_expert_intermediate_size``.

    Raises:
        ConfigError: another model_type, or a key missing (named).
    """
    family = hf.get("model_type", "")
    if family not in HF_MOE_KEYS:
        raise ConfigError(f"unsupported MoE model_type {family!r} ({', '.join(HF_MOE_KEYS)})")
    fields: dict[str, Any] = {"router": "softmax_topk"}
    for ours, theirs in HF_MOE_KEYS[family].items():
        if theirs not in hf and ours not in _HF_DEFAULTS:
            raise ConfigError(f"config.json of a {family} model has no {theirs!r}")
        fields[ours] = hf.get(theirs, _HF_DEFAULTS.get(ours))
    fields["renormalize"] = family == "mixtral" or bool(hf.get("norm_topk_prob", False))
    return fields


def moe_config_from_hf(hf_config: Any) -> MoEConfig:
    """MoEConfig of a MixtralConfig or Qwen2MoeConfig (no balancing loss fields are read)."""
    return MoEConfig(hidden_size=hf_config.hidden_size, **moe_fields_from_hf(hf_config.to_dict()))


@torch.no_grad()
def load_hf_block(layer: MoELayer, block: Any) -> MoELayer:
    """Copy a ``MixtralSparseMoeBlock`` or ``Qwen2MoeSparseMoeBlock`` into ``layer`` (in place).

    Args:
        layer: an MoELayer of matching shape (softmax_topk router, swiglu experts).
        block: the Hugging Face block (``gate.weight`` (E, H), ``experts.gate_up_proj`` (E, 2I, H),
            ``experts.down_proj`` (E, H, I), optional ``shared_expert`` and ``shared_expert_gate``).

    Returns:
        layer.
    """
    layer.router.gate.weight.copy_(block.gate.weight)
    layer.experts.gate_up.copy_(block.experts.gate_up_proj.transpose(1, 2))
    layer.experts.down.copy_(block.experts.down_proj.transpose(1, 2))
    shared = getattr(block, "shared_expert", None)
    if shared is not None:
        if not isinstance(layer.shared_expert, SharedExpert) or layer.shared_expert.gate is None:
            raise ConfigError(
                "the block has a gated shared expert; the layer has none (shared_expert_intermediate_size)"
            )
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(layer.shared_expert, name).weight.copy_(getattr(shared, name).weight)
        layer.shared_expert.gate.weight.copy_(block.shared_expert_gate.weight)
    return layer


def moe_from_hf_block(block: Any, hf_config: Any) -> MoELayer:
    """A new MoELayer equal to a Hugging Face sparse MoE block."""
    layer = build_moe(moe_config_from_hf(hf_config))
    p = next(block.parameters())
    return load_hf_block(layer.to(dtype=p.dtype, device=p.device), block)
