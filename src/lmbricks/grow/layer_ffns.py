"""The FFNs one MoE layer of an assembly holds: its routed experts and its shared expert(s), from the sources.

Each FFN is read from its source, multiplied by its recipe entry's ``residual_scale`` and noised by
its ``noise_scale`` (one generator for the whole model, routed experts first, then shared experts,
layer by layer, so an output is reproducible from the recipe's seed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lmbricks.grow.sources import ExpertFFN, side_by_side

if TYPE_CHECKING:
    from lmbricks.grow.assemble import AssemblyPlan


def layer_experts(plan: AssemblyPlan, layer: int, gen: torch.Generator) -> list[ExpertFFN]:
    """The routed experts' FFNs of one layer, each scaled and noised as its recipe entry says (fp32),
    times DeepSeek's ``routed_scaling_factor`` when it is folded in (``deepseek_as: qwen2_moe``)."""
    r = plan.recipe
    return [
        src.ffn(layer).scaled(spec.residual_scale).noisy(spec.noise_scale, gen).scaled(r.folded_scale)
        for src, spec in zip(plan.experts, r.experts, strict=True)
    ]


def shared_ffn(plan: AssemblyPlan, layer: int, gen: torch.Generator) -> ExpertFFN | None:
    """The layer's shared experts as one FFN (side by side: their sum), or None without shared experts.

    Each is scaled and noised as its recipe entry says (fp32). The width is the sum of theirs, as
    transformers' DeepSeek / Glm4-MoE ``shared_experts`` MLP of ``moe_intermediate_size *
    n_shared_experts`` and Qwen2-MoE's ``shared_expert_intermediate_size`` expect.
    """
    specs = plan.recipe.shared_experts or []
    if not plan.shared:
        return None
    ffns = [
        src.ffn(layer).scaled(spec.residual_scale).noisy(spec.noise_scale, gen)
        for src, spec in zip(plan.shared, specs, strict=True)
    ]
    return side_by_side(ffns)


__all__ = ["layer_experts", "shared_ffn"]
