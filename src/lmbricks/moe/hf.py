"""Copy Hugging Face sparse MoE blocks (transformers >= 5 fused experts) into an MoELayer."""

from __future__ import annotations

from typing import Any

import torch

from lmbricks.errors import ConfigError
from lmbricks.moe.config import MoEConfig
from lmbricks.moe.layer import MoELayer, build_moe
from lmbricks.moe.shared import SharedExpert


def moe_config_from_hf(hf_config: Any) -> MoEConfig:
    """MoEConfig of a MixtralConfig or Qwen2MoeConfig (no balancing loss fields are read)."""
    mt = getattr(hf_config, "model_type", "")
    if mt == "mixtral":
        return MoEConfig(
            hidden_size=hf_config.hidden_size,
            intermediate_size=hf_config.intermediate_size,
            num_experts=hf_config.num_local_experts,
            top_k=hf_config.num_experts_per_tok,
            renormalize=True,
        )
    if mt == "qwen2_moe":
        return MoEConfig(
            hidden_size=hf_config.hidden_size,
            intermediate_size=hf_config.moe_intermediate_size,
            num_experts=hf_config.num_experts,
            top_k=hf_config.num_experts_per_tok,
            renormalize=bool(hf_config.norm_topk_prob),
            shared_expert_intermediate_size=hf_config.shared_expert_intermediate_size,
        )
    raise ConfigError(f"unsupported MoE model_type {mt!r} (mixtral, qwen2_moe)")


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
