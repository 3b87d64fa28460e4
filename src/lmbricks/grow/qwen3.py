"""Qwen3-MoE output of ``lmbricks moe assemble`` (mergekit-moe's ``qwen3`` architecture).

A Qwen3 base gives a ``Qwen3MoeForCausalLM`` directory. lmbricks.nn does not compute Qwen3 (its
attention normalises each head's queries and keys with an RMSNorm), so this path builds no
:class:`lmbricks.nn.LM`; it works on tensors by name:

* every tensor outside the FFNs is copied from the base (or averaged over the experts' sources,
  ``non_experts: average``), through the validated checkpoint reader;
* layer i's routed experts are the experts' dense FFNs of layer i (``residual_scale`` and
  ``noise_scale`` applied as for Mixtral), written one tensor per expert as ``save_pretrained`` does
  (``model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.weight``);
* the router ``model.layers.{i}.mlp.gate.weight`` (E, H) comes from the same gate modes as the other
  outputs. ``hidden``, ``hidden_avg`` and ``domain`` run transformers' dense Qwen3 model of the
  non-expert weights, hooked on ``post_attention_layernorm`` (the router's input).

Every layer is sparse, top-k gates are renormalised (``norm_topk_prob``), each expert is as wide as
the base FFN. Qwen3-MoE has no shared expert, so ``shared_experts`` is refused (as mergekit does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.grow.assemble import AssemblyPlan, Log, routing
from lmbricks.grow.layer_ffns import layer_experts
from lmbricks.grow.recipe import QWEN3_FAMILIES, QWEN3_NAMES, check_qwen3_plan
from lmbricks.grow.save import inventory


def qwen3_moe_config(base_config: dict[str, Any], n_experts: int, top_k: int, dtype: torch.dtype) -> dict[str, Any]:
    """config.json of the Qwen3-MoE output: the base's fields plus the MoE ones.

    Args:
        base_config: the dense Qwen3 base's config.json.
        n_experts: routed experts per layer.
        top_k: experts per token.
        dtype: storage dtype.

    Returns:
        The config dictionary (transformers' ``Qwen3MoeConfig``, every layer sparse, renormalised
        top-k, experts as wide as the base FFN).
    """
    from transformers import Qwen3MoeConfig

    skip = {"architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "layer_types"}
    fields = {k: v for k, v in base_config.items() if k not in skip}
    cfg = Qwen3MoeConfig(
        **{
            **fields,
            "num_experts": n_experts,
            "num_experts_per_tok": top_k,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": True,
            "moe_intermediate_size": int(base_config["intermediate_size"]),
        }
    )
    out = cfg.to_dict()
    out.update(architectures=["Qwen3MoeForCausalLM"], dtype=str(dtype).removeprefix("torch."))
    return out


def non_expert_tensors(plan: AssemblyPlan, base: Any, log: Log) -> dict[str, Tensor]:
    """Every base tensor outside the FFNs, fp32: the base's, or averaged over the experts' sources."""
    names = [n for n in base.reader if ".mlp." not in n]
    if plan.recipe.non_experts == "average":
        log(f"averaging non-expert weights over {len(plan.experts)} expert sources")
        return {n: torch.stack([s.read(n) for s in plan.experts]).mean(0) for n in names}
    return {n: base.read(n).to(torch.float32, copy=True) for n in names}


def dense_model(plan: AssemblyPlan, base: Any, non_experts: dict[str, Tensor]) -> nn.Module:
    """transformers' dense model of the base (Qwen3 or another) with the written non-expert weights (fp32, eval)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(plan.base_path)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    state = {**non_experts, **{n: base.read(n).float() for n in base.reader if ".mlp." in n}}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise ConfigError(
            f"base_model: {plan.base_path} does not load as {type(model).__name__}: {missing or unexpected}"
        )
    model.tie_weights()
    return model.eval()


def write_qwen3_moe(
    plan: AssemblyPlan,
    out: Path,
    *,
    force: bool,
    log: Log,
    command: str,
    inputs: dict[str, Path],
    collinear_threshold: float = 0.9,
) -> Path:
    """Assemble and write the Qwen3-MoE of a checked plan (atomically, with ``lmbricks.json``).

    Args:
        plan: from :func:`~lmbricks.grow.assemble.plan_assembly` with a Qwen3 base.
        out: the output directory.
        force: replace an existing lmbricks output.
        log: one-line progress messages.
        command: recorded in lmbricks.json.
        inputs: name -> input path, hashed into lmbricks.json.
        collinear_threshold: router-row cosine that triggers a :class:`~lmbricks.grow.assemble.GrowWarning`.

    Returns:
        ``out``.
    """
    from transformers import AutoTokenizer

    from lmbricks.checkpoint import ShardedWriter, atomic_directory, copy_tokenizer, write_provenance
    from lmbricks.merge.inputs import open_input

    r = plan.recipe
    layers = list(range(int(plan.base_config["num_hidden_layers"])))
    base = open_input(str(plan.base_path))
    try:
        non_experts = non_expert_tensors(plan, base, log)
        log(f"router rows ({r.gate_mode}) from transformers' Qwen3 model of {r.base_model}")
        tokenizer = AutoTokenizer.from_pretrained(plan.base_path)
        dense = dense_model(plan, base, non_experts)
        rows, _shared, max_cos, _issued = routing(plan, dense, tokenizer, layers, log, collinear_threshold)
        del dense
    finally:
        base.reader.close()
    bricks = {**inventory(plan, layers, max_cos, out), "family": "qwen3_moe", "transformers_exact": True}
    config = qwen3_moe_config(plan.base_config, len(r.experts), r.experts_per_token, plan.dtype)
    gen = torch.Generator().manual_seed(r.seed + 1)
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        writer = ShardedWriter(tmp)
        for name, t in non_experts.items():
            writer.add(name, t.to(plan.dtype))
        log(f"writing {len(r.experts)} experts x {len(layers)} layers")
        for i in layers:
            p = f"model.layers.{i}.mlp"
            for e, ffn in enumerate(layer_experts(plan, i, gen)):
                for proj, w in (("gate_proj", ffn.gate), ("up_proj", ffn.up), ("down_proj", ffn.down)):
                    writer.add(f"{p}.experts.{e}.{proj}.weight", w.to(plan.dtype).contiguous())
            writer.add(f"{p}.gate.weight", rows[i].to(plan.dtype).contiguous())  # (E, H)
        writer.finish()
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copy_tokenizer(plan.base_path, tmp)
        write_provenance(tmp, command=command, recipe=r.to_dict(), inputs=inputs, bricks=bricks)
    return out


__all__ = [
    "QWEN3_FAMILIES",
    "QWEN3_NAMES",
    "check_qwen3_plan",
    "dense_model",
    "non_expert_tensors",
    "qwen3_moe_config",
    "write_qwen3_moe",
]
