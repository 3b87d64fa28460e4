"""Glm4-MoE output of ``lmbricks moe assemble``: DeepSeek-V3's router over a Llama / Qwen2 attention.

``architecture: deepseek`` with ``deepseek_as: glm4_moe`` writes ``Glm4MoeForCausalLM``, the one
transformers model whose router is group-limited (``n_group`` / ``topk_group``, as DeepSeek-V2/V3)
and whose attention is a plain grouped-query attention (``use_qk_norm: false``, full rotary,
``attention_bias`` on q/k/v as Qwen2 or none as Llama). DeepSeek-V2/V3 themselves are not targets: their
multi-head latent attention RMS-normalises a low-rank key/value projection per token and ropes a key
shared by all heads, which no Llama attention is. transformers' group-limited routers of plain
attention (Glm4-MoE, Solar-Open, MiMo-V2-Flash) all score by sigmoid, so this output does too.

As :mod:`lmbricks.grow.qwen3`, this path works on tensors by name (lmbricks.nn has no group-limited
router): non-expert tensors copied from the base (or averaged, ``non_experts: average``), routed
experts one tensor per expert as ``save_pretrained`` writes them, the router rows of the gate mode
(from transformers' dense model of the base), ``e_score_correction_bias`` zero, and the shared
experts side by side as one MLP of ``moe_intermediate_size * n_shared_experts``
(:func:`lmbricks.grow.layer_ffns.shared_ffn`), added ungated. Every layer is sparse
(``first_k_dense_replace: 0``), gates are renormalised and times ``routed_scaling_factor``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import ConfigError
from lmbricks.grow.assemble import AssemblyPlan, Log, routing
from lmbricks.grow.deepseek import check_glm4_base
from lmbricks.grow.layer_ffns import layer_experts, shared_ffn
from lmbricks.grow.qwen3 import dense_model, non_expert_tensors
from lmbricks.grow.save import inventory
from lmbricks.grow.sources import ExpertFFN

#: Base config fields carried into the Glm4-MoE config unchanged.
_CARRIED = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
)  # fmt: skip


def glm4_moe_config(plan: AssemblyPlan) -> dict[str, Any]:
    """config.json of the Glm4-MoE output (checked before anything is read or written).

    Returns:
        transformers' ``Glm4MoeConfig`` of the base's shape: E routed experts as wide as the base FFN,
        ``n_shared_experts`` from the recipe, the recipe's groups and scaling factor, every layer sparse,
        no multi-token-prediction layer.
    """
    from transformers import AutoConfig, Glm4MoeConfig

    r, base = plan.recipe, plan.base_config
    bias = check_glm4_base(base)
    rope = dict(AutoConfig.from_pretrained(plan.base_path).rope_parameters or {})
    fields = {k: base[k] for k in _CARRIED if base.get(k) is not None}
    cfg = Glm4MoeConfig(
        **fields,
        rope_parameters={**rope, "partial_rotary_factor": 1.0},
        attention_bias=bias,
        use_qk_norm=False,
        moe_intermediate_size=int(base["intermediate_size"]),
        n_routed_experts=len(r.experts),
        num_experts_per_tok=r.experts_per_token,
        n_shared_experts=len(plan.shared),
        routed_scaling_factor=float(r.routed_scaling_factor or 1.0),
        n_group=r.n_group or 1,
        topk_group=r.topk_group or 1,
        first_k_dense_replace=0,
        norm_topk_prob=True,
        num_mtp_layers=0,
    )
    out = cfg.to_dict()
    out.update(architectures=["Glm4MoeForCausalLM"], dtype=str(plan.dtype).removeprefix("torch."))
    return out


def _ffn_tensors(prefix: str, ffn: ExpertFFN, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``{prefix}.{gate,up,down}_proj.weight`` of one FFN in the output dtype."""
    pairs = (("gate_proj", ffn.gate), ("up_proj", ffn.up), ("down_proj", ffn.down))
    return {f"{prefix}.{proj}.weight": w.to(dtype).contiguous() for proj, w in pairs}


def _layer_tensors(plan: AssemblyPlan, i: int, rows: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Every tensor of MoE layer ``i``: routed experts, router (E, H) and its zero bias (E,), shared MLP."""
    p, dtype = f"model.layers.{i}.mlp", plan.dtype
    out: dict[str, torch.Tensor] = {}
    for e, ffn in enumerate(layer_experts(plan, i, gen)):
        out.update(_ffn_tensors(f"{p}.experts.{e}", ffn, dtype))
    out[f"{p}.gate.weight"] = rows.to(dtype).contiguous()
    out[f"{p}.gate.e_score_correction_bias"] = torch.zeros(rows.shape[0], dtype=torch.float32)
    shared = shared_ffn(plan, i, gen)
    if shared is None:  # check_deepseek refuses this before any work
        raise ConfigError("shared_experts: the DeepSeek layout has a shared expert")
    out.update(_ffn_tensors(f"{p}.shared_experts", shared, dtype))
    return out


def write_glm4_moe(
    plan: AssemblyPlan, out: Path, *, force: bool, log: Log, command: str, inputs: dict[str, Path]
) -> Path:
    """Assemble and write the Glm4-MoE of a checked plan (atomically, with ``lmbricks.json``).

    Args:
        plan: from :func:`~lmbricks.grow.assemble.plan_assembly` with ``deepseek_as: glm4_moe``.
        out: the output directory.
        force: replace an existing lmbricks output.
        log: one-line progress messages.
        command: recorded in lmbricks.json.
        inputs: name -> input path, hashed into lmbricks.json.

    Returns:
        ``out``.
    """
    from transformers import AutoTokenizer

    from lmbricks.checkpoint import ShardedWriter, atomic_directory, copy_tokenizer, write_provenance
    from lmbricks.merge.inputs import open_input

    r = plan.recipe
    config = glm4_moe_config(plan)
    layers = list(range(int(plan.base_config["num_hidden_layers"])))
    base = open_input(str(plan.base_path))
    try:
        non_experts = non_expert_tensors(plan, base, log)
        log(f"router rows ({r.gate_mode}) from transformers' dense model of {r.base_model}")
        dense = dense_model(plan, base, non_experts)
        tokenizer = AutoTokenizer.from_pretrained(plan.base_path)
        rows, _shared, max_cos, _issued = routing(plan, dense, tokenizer, layers, log, 0.9)
        del dense
    finally:
        base.reader.close()
    bricks = {**inventory(plan, layers, max_cos, out), "family": "glm4_moe", "transformers_exact": True}
    gen = torch.Generator().manual_seed(r.seed + 1)
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        writer = ShardedWriter(tmp)
        for name, t in non_experts.items():
            writer.add(name, t.to(plan.dtype))
        log(f"writing {len(r.experts)} experts + {len(plan.shared)} shared x {len(layers)} layers")
        for i in layers:
            for name, t in _layer_tensors(plan, i, rows[i], gen).items():
                writer.add(name, t)
        writer.finish()
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copy_tokenizer(plan.base_path, tmp)
        write_provenance(tmp, command=command, recipe=r.to_dict(), inputs=inputs, bricks=bricks)
    return out


__all__ = ["glm4_moe_config", "write_glm4_moe"]
