"""Assemble a mixture of experts from fine-tunes and bricks of one base (mergekit-moe, Branch-Train-MiX).

Three stages, so that every check happens before anything is written:

1. :func:`plan_assembly` validates the recipe (:mod:`lmbricks.grow.recipe`), resolves the base, opens
   every expert source (headers, configs, adapters; see :mod:`lmbricks.grow.sources`) and checks
   domains and the output path. No tensor is read.
2. :func:`assemble_model` builds the sparse model in memory: non-expert weights from the base or
   averaged across the experts' sources (BTX), expert FFNs from the sources, router rows by the gate
   mode (:mod:`lmbricks.grow.gates`), optional shared expert.
3. :func:`lmbricks.grow.pipeline.assemble` writes it atomically (Mixtral, or Qwen2-MoE with a shared expert,
   DeepSeek's ungated one included: ``deepseek_as``) with
   ``lmbricks.json`` naming every expert, its source, brick and domain.

A Qwen3 base skips stage 2 (lmbricks.nn does not compute Qwen3): :mod:`lmbricks.grow.qwen3` copies its
tensors by name into a Qwen3-MoE, with the router rows of :func:`routing`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.grow import gates as G
from lmbricks.grow.build import build_moe_lm, moe_lm_config
from lmbricks.grow.deepseek import check_glm4_base
from lmbricks.grow.hidden import (
    cheap_embedding,
    domain_blocks,
    input_embedding,
    mean_router_inputs,
    prompt_router_inputs,
)
from lmbricks.grow.layer_ffns import layer_experts, shared_ffn
from lmbricks.grow.recipe import QWEN3_FAMILIES, ExpertSpec, MoERecipe, check_qwen3_plan
from lmbricks.grow.save import check_destination, inventory, stored_dtype, torch_dtype
from lmbricks.grow.sources import EXPERT_FAMILIES, ExpertFFN, ExpertSource, open_source
from lmbricks.nn.model import LM

Log = Callable[[str], None]


class GrowWarning(UserWarning):
    """A recipe that will assemble but probably not route well (e.g. nearly collinear router rows)."""


@dataclass
class AssemblyPlan:
    """A recipe checked against its inputs; nothing read but headers.

    Attributes:
        recipe: the validated recipe.
        base_path: the base model directory.
        base_config: its config.json.
        experts: the opened expert sources, in recipe order.
        shared: the opened shared-expert sources, in recipe order (empty without).
        dtype: the output dtype.
    """

    recipe: MoERecipe
    base_path: Path
    base_config: dict[str, Any]
    experts: list[ExpertSource]
    shared: list[ExpertSource]
    dtype: torch.dtype

    @property
    def labels(self) -> list[str]:
        return [e.label() for e in self.recipe.experts]

    def close(self) -> None:
        for s in self.experts + self.shared:
            s.close()


@dataclass
class Assembly:
    """What :func:`assemble_model` built, besides the model."""

    model: LM
    rows: Tensor  # (L_moe, E, H) router rows as written
    layers: list[int]  # model index of each MoE layer
    max_cosine: list[float]  # per MoE layer, the largest cosine between two router rows
    warnings: list[str] = field(default_factory=list)


def check_domain(name: str, where: str) -> None:
    """Refuse a domain that is neither built in nor added with ``lmbricks data add`` (``where`` names the field)."""
    from lmbricks.data import DOMAINS
    from lmbricks.data.store import read_manifest

    if name.split("/")[0] in DOMAINS:
        return
    if read_manifest(name) is None:
        raise ConfigError(
            f"{where}: unknown domain {name!r} (built in: {', '.join(DOMAINS)}; add your own with `lmbricks data add`)"
        )


def _content_key(src: ExpertSource) -> tuple[str, str | None]:
    """What an expert computes, by content hash (two copies of one fine-tune are the same expert)."""
    from lmbricks.checkpoint import content_hash

    adapter = src.input.adapter
    return content_hash(src.path), None if adapter is None else content_hash(adapter.path)


def _groups(recipe: MoERecipe) -> tuple[tuple[str, list[ExpertSpec]], ...]:
    """The recipe's expert lists by field name: ``experts``, then ``shared_experts``."""
    return ("experts", list(recipe.experts)), ("shared_experts", list(recipe.shared_experts or []))


def _open_sources(recipe: MoERecipe, base_path: Path, base_config: dict[str, Any]) -> list[ExpertSource]:
    """Open every expert source in recipe order (experts, then the shared experts); all closed if one fails."""
    sources: list[ExpertSource] = []
    try:
        for group, specs in _groups(recipe):
            for i, e in enumerate(specs):
                sources.append(
                    open_source(
                        source_model=e.source_model,
                        brick=e.brick,
                        base_ref=recipe.base_model,
                        base_path=base_path,
                        base_config=base_config,
                        where=f"{group}[{i}]",
                    )
                )
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


def plan_assembly(
    recipe: MoERecipe, out: str | Path | None = None, force: bool = False, inputs: Sequence[str | Path] = ()
) -> AssemblyPlan:
    """Check a recipe against its inputs without reading any tensor.

    Args:
        recipe: the parsed recipe.
        out: the output directory, refused now by the input guard (an input, inside or around one,
            or existing unless ``force`` and lmbricks wrote it).
        force: allow replacing ``out``.
        inputs: more paths ``out`` must keep apart from (the recipe file).

    Returns:
        The :class:`AssemblyPlan` (close it, or let :func:`~lmbricks.grow.pipeline.assemble` do so).

    Raises:
        ConfigError / CheckpointError / UnknownNameError: naming the recipe field at fault (an expert of
            another base, an unknown brick or domain, a base that is not dense, an existing output).
    """
    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import read_config

    if out is not None:
        specs = [*recipe.experts, *(recipe.shared_experts or [])]
        refs = [recipe.base_model, *(e.source_model for e in specs), *(e.brick for e in specs)]
        check_destination(out, force, [*inputs, *refs])
    base_path = resolve_model(recipe.base_model)
    base_config = read_config(base_path)
    base_type = base_config.get("model_type")
    if base_type not in EXPERT_FAMILIES:
        raise ConfigError(
            f"base_model: {recipe.base_model} is a {base_type!r} model; "
            f"the base must be dense ({', '.join(EXPERT_FAMILIES)})"
        )
    check_qwen3_plan(recipe, base_type)
    if recipe.deepseek_as == "glm4_moe":
        check_glm4_base(base_config)
    for group, specs in _groups(recipe):
        for i, e in enumerate(specs):
            if e.domain:
                check_domain(e.domain, f"{group}[{i}].domain")
    sources = _open_sources(recipe, base_path, base_config)
    n = len(recipe.experts)
    if n > 1 and len({_content_key(s) for s in sources[:n]}) == 1:
        warnings.warn(
            "every expert has the same content: the MoE computes what one expert does (useful only before training)",
            GrowWarning,
            stacklevel=2,
        )
    dtype = torch_dtype(recipe.dtype, stored_dtype(base_path))
    return AssemblyPlan(recipe, base_path, base_config, sources[:n], sources[n:], dtype)


# ------------------------------------------------------------------------------------------- build
def _non_expert_model(plan: AssemblyPlan, log: Log, base: tuple[LM, Any] | None = None) -> tuple[LM, Any]:
    """The base LM (fp32), with attention/embeddings/norms averaged over the experts if asked (BTX).

    ``base`` is an already loaded ``(model, tokenizer)`` of the base: used as is (read only) when the
    non-expert weights come from the base, copied when they are averaged.
    """
    import copy

    from lmbricks.nn.hf import hf_state_dict, load_hf_weights
    from lmbricks.nn.load import load_model

    if plan.base_config.get("model_type") in QWEN3_FAMILIES:
        raise ConfigError(
            "base_model: a Qwen3 base is assembled by tensor name (lmbricks.grow.qwen3.write_qwen3_moe, "
            "which lmbricks.grow.assemble calls), not as an lmbricks.nn model"
        )
    if base is not None:
        model, tokenizer = base
        if not isinstance(model, LM) or model.cfg.hidden_size != plan.base_config.get("hidden_size"):
            raise ConfigError("the loaded base model given to assemble_model does not match base_model")
        if plan.recipe.non_experts == "average":
            model = copy.deepcopy(model)
    else:
        log(f"loading base {plan.recipe.base_model}")
        model, tokenizer = load_model(plan.base_path, dtype=torch.float32)
    if plan.recipe.non_experts == "average":
        log(f"averaging non-expert weights over {len(plan.experts)} expert sources")
        family = str(plan.base_config["model_type"])
        named = hf_state_dict(model, family)
        merged: dict[str, Tensor] = {}
        for name, t in named.items():
            if ".mlp." in name:
                merged[name] = t.clone()
            else:
                merged[name] = torch.stack([s.read(name) for s in plan.experts]).mean(0)
        load_hf_weights(model, merged.__getitem__, set(merged), family)
    if tokenizer is None:
        raise ConfigError(f"base_model: {plan.base_path} has no tokenizer files")
    return model, tokenizer


def _domain_means(
    plan: AssemblyPlan, model: nn.Module, tokenizer: Any, layers: list[int], log: Log
) -> dict[str, Tensor]:
    """Mean router input per MoE layer for each distinct domain of the recipe: {domain: (L_moe, H)}."""
    from lmbricks.data import load_texts

    r = plan.recipe
    out: dict[str, Tensor] = {}
    names = [e.domain for e in r.experts] + [e.domain for e in (r.shared_experts or [])]
    for d in dict.fromkeys(n for n in names if n):
        log(f"domain {d}: router inputs over {r.domain_tokens} tokens")
        try:
            blocks = domain_blocks(tokenizer, load_texts(d, "train"), r.domain_tokens, seed=r.seed)
        except ValueError as exc:
            raise ConfigError(f"domain {d!r}: {exc} in its train split") from None
        out[d] = mean_router_inputs(model, blocks)[layers]
    return out


def _prompt_stat(plan: AssemblyPlan, model: nn.Module, tokenizer: Any, prompts: list[str], layers: list[int]) -> Tensor:
    """(L_moe, H) statistic of some prompts under the recipe's prompt gate mode."""
    mode = plan.recipe.gate_mode
    if mode == "cheap_embed":
        v = cheap_embedding(input_embedding(model), tokenizer, prompts)
        return v.expand(len(layers), -1)
    return prompt_router_inputs(model, tokenizer, prompts, average=mode == "hidden_avg")[layers]


def gate_rows(
    plan: AssemblyPlan, model: nn.Module, tokenizer: Any, layers: list[int], log: Log
) -> tuple[Tensor, Tensor]:
    """Router rows (L_moe, E, H) of the experts and the shared-expert gate rows (L_moe, 1, H).

    ``model`` is the LM whose non-expert weights are written (or a transformers model of it, for
    bases lmbricks.nn does not compute). The shared expert's sigmoid gate gets a row only when the
    gate mode has what it needs (prompts, a domain, or a random mode); otherwise it is zero, i.e. a
    constant gate of 0.5.
    """
    r = plan.recipe
    e, h, n = len(r.experts), int(input_embedding(model).shape[1]), len(layers)
    gen = torch.Generator().manual_seed(r.seed)
    shared_spec = r.shared_experts[0] if r.shared_experts else None
    shared_row = torch.zeros(n, 1, h)
    if r.gate_mode in ("random", "uniform_random"):
        rows = G.random_rows(n, e + 1, h, gen, r.gate_mode)
        return rows[:, :e], (rows[:, e:] if shared_spec is not None else shared_row)
    if r.gate_mode == "domain":
        means = _domain_means(plan, model, tokenizer, layers, log)
        rows = G.domain_rows(torch.stack([means[str(x.domain)] for x in r.experts]), center=r.domain_center)
        if shared_spec is not None and shared_spec.domain:
            center = (
                torch.stack([means[str(x.domain)] for x in r.experts]).mean(0) if r.domain_center and e > 1 else 0.0
            )
            shared_row = G.normalise_rows(means[shared_spec.domain] - center)[:, None]
        return rows, shared_row
    log(f"gate mode {r.gate_mode}: router inputs of {sum(len(x.positive_prompts or []) for x in r.experts)} prompts")
    pos = [_prompt_stat(plan, model, tokenizer, list(x.positive_prompts or []), layers) for x in r.experts]
    neg = [
        _prompt_stat(plan, model, tokenizer, list(x.negative_prompts), layers) if x.negative_prompts else None
        for x in r.experts
    ]
    rows = G.prompt_rows(pos, neg)
    if shared_spec is not None and shared_spec.positive_prompts:
        p = _prompt_stat(plan, model, tokenizer, list(shared_spec.positive_prompts), layers)
        q = (
            _prompt_stat(plan, model, tokenizer, list(shared_spec.negative_prompts), layers)
            if shared_spec.negative_prompts
            else None
        )
        shared_row = G.prompt_rows([p], [q])
    return rows, shared_row


def routing(
    plan: AssemblyPlan, model: nn.Module, tokenizer: Any, layers: list[int], log: Log, collinear_threshold: float
) -> tuple[Tensor, Tensor, list[float], list[str]]:
    """Router rows by the gate mode, with the collinearity check.

    Returns:
        (rows (L_moe, E, H), shared-expert gate rows (L_moe, 1, H), the largest cosine between two
        rows per MoE layer, the warnings issued).
    """
    n_experts = len(plan.recipe.experts)
    rows, shared_rows = gate_rows(plan, model, tokenizer, layers, log)
    found = G.collinear_pairs(rows, layers, collinear_threshold)
    issued = []
    if found:
        msg = G.describe_collinearity(found, plan.labels, len(layers))
        warnings.warn(msg, GrowWarning, stacklevel=3)
        issued.append(msg)
    cos = G.row_cosines(rows).masked_fill(torch.eye(n_experts, dtype=torch.bool), -1.0)
    max_cos = [float(c.max()) if n_experts > 1 else 0.0 for c in cos]
    return rows, shared_rows, max_cos, issued


def assemble_model(
    plan: AssemblyPlan,
    log: Log | None = None,
    collinear_threshold: float = 0.9,
    base: tuple[LM, Any] | None = None,
) -> Assembly:
    """Build the assembled MoE in memory (fp32).

    Args:
        plan: from :func:`plan_assembly`.
        log: one-line progress messages.
        collinear_threshold: cosine above which two router rows of a layer trigger a :class:`GrowWarning`.
        base: the base ``(LM in fp32, tokenizer)`` if already loaded (it is not modified).

    Returns:
        The :class:`Assembly` (model, router rows, per-layer row similarity, warnings issued).
    """
    say: Log = log or (lambda _m: None)
    r = plan.recipe
    base_lm, tokenizer = _non_expert_model(plan, say, base)
    width = len(plan.shared) * int(plan.base_config["intermediate_size"]) or None  # side by side
    cfg = moe_lm_config(
        base_lm.cfg, len(r.experts), r.experts_per_token, shared_expert=bool(plan.shared), shared_width=width
    )
    layers = [i for i in range(cfg.num_layers) if cfg.is_moe_layer(i)]
    rows, shared_rows, max_cos, issued = routing(plan, base_lm, tokenizer, layers, say, collinear_threshold)
    say(f"reading {len(r.experts)} experts x {len(layers)} layers")
    gen = torch.Generator().manual_seed(r.seed + 1)
    experts: dict[int, list[ExpertFFN]] = {}
    shared: dict[int, tuple[ExpertFFN, Tensor]] = {}
    for li, i in enumerate(layers):
        experts[i] = layer_experts(plan, i, gen)
        ffn = shared_ffn(plan, i, gen)
        if ffn is not None:
            if r.ungated_shared:  # DeepSeek's ungated S(x) = sigmoid(0) * 2 S(x), exactly (grow.deepseek)
                ffn, shared_rows[li] = ffn.scaled(2.0), 0.0
            shared[i] = (ffn, shared_rows[li])
    state = base_lm.state_dict()
    model = build_moe_lm(cfg, state, experts, {i: rows[li] for li, i in enumerate(layers)}, shared or None)
    return Assembly(model, rows, layers, max_cos, issued)


__all__ = [
    "Assembly",
    "AssemblyPlan",
    "GrowWarning",
    "assemble_model",
    "check_domain",
    "gate_rows",
    "inventory",
    "layer_experts",
    "plan_assembly",
    "routing",
    "shared_ffn",
]
