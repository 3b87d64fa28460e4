"""The grow pipelines: assemble an MoE from a recipe, and grow an MoE by one expert.

- :func:`assemble`: a recipe (:class:`~lmbricks.grow.recipe.MoERecipe`, validated) ->
  :func:`~lmbricks.grow.assemble.plan_assembly` (every check, no tensor read) ->
  :func:`~lmbricks.grow.assemble.assemble_model` (the MoE in memory) -> an atomic write with the
  ``lmbricks.json`` inventory; a Qwen3 base goes to :func:`~lmbricks.grow.qwen3.write_qwen3_moe`
  instead (tensors by name, Qwen3-MoE output), ``deepseek_as: glm4_moe`` to
  :func:`~lmbricks.grow.glm4.write_glm4_moe` (tensors by name, Glm4-MoE output).
- :func:`grow`: :class:`GrowConfig` -> the new expert's source and the MoE's recorded inventory ->
  its router rows from the domain (:func:`~lmbricks.grow.add_expert.new_router_rows`) ->
  :func:`~lmbricks.grow.add_expert.grow_model` -> an atomic write.

``lmbricks moe assemble | grow``, the tour and scripts/ call these; :func:`~lmbricks.grow.upcycle.upcycle`
is the third grow pipeline.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import ConfigError
from lmbricks.grow.add_expert import grow_model, grown_inventory, new_router_rows, open_expert, recorded_inventory
from lmbricks.grow.assemble import (
    AssemblyPlan,
    GrowWarning,
    Log,
    assemble_model,
    check_domain,
    inventory,
    plan_assembly,
)
from lmbricks.grow.glm4 import write_glm4_moe
from lmbricks.grow.qwen3 import write_qwen3_moe
from lmbricks.grow.recipe import QWEN3_FAMILIES, GrowConfig, MoERecipe, load_moe_recipe, parse_moe_recipe
from lmbricks.grow.save import check_destination, save_grown, stored_dtype, torch_dtype
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM


def _quiet(_message: str) -> None:
    """A log that says nothing."""


# ----------------------------------------------------------------------------------------- assemble
def as_moe_recipe(recipe: str | Path | dict[str, Any] | MoERecipe) -> tuple[MoERecipe, list[str | Path]]:
    """The validated recipe, and the recipe file it came from (kept apart from the output) if any."""
    if isinstance(recipe, MoERecipe):
        return recipe, []
    if isinstance(recipe, dict):
        return parse_moe_recipe(recipe), []
    return load_moe_recipe(recipe), [recipe]


def _assembly_inputs(plan: AssemblyPlan) -> dict[str, Path]:
    """What ``lmbricks.json`` names as the assembly's inputs: the base, each expert's brick or model."""
    inputs: dict[str, Path] = {"base_model": plan.base_path}
    for e, src in enumerate(plan.experts):
        inputs[f"experts[{e}]"] = src.brick_path if src.brick_path is not None else src.path
    for s, src in enumerate(plan.shared):
        inputs[f"shared_experts[{s}]"] = src.brick_path or src.path
    return inputs


def assemble(
    recipe: str | Path | dict[str, Any] | MoERecipe,
    out: str | Path,
    *,
    force: bool = False,
    log: Log | None = None,
    command: str | None = None,
    base: tuple[LM, Any] | None = None,
) -> Path:
    """Validate a recipe, build the MoE and write it (atomically) as a Hugging Face directory.

    Args:
        recipe: a YAML path, a parsed mapping or a :class:`MoERecipe`.
        out: the output directory (refused if it exists, unless ``force``; never an input, inside
            or around one, nor the recipe file).
        force: replace ``out``.
        log: one-line progress messages.
        command: recorded in lmbricks.json (default: the process's command line).
        base: the base ``(LM in fp32, tokenizer)`` if already loaded (saves loading it again).

    Returns:
        ``out``.
    """
    r, files = as_moe_recipe(recipe)
    plan = plan_assembly(r, out, force, inputs=files)
    try:
        if plan.base_config.get("model_type") in QWEN3_FAMILIES:
            if base is not None:
                raise ConfigError("base: a Qwen3 base is read by tensor name; pass base=None")
            return write_qwen3_moe(
                plan,
                Path(out).expanduser(),
                force=force,
                log=log or _quiet,
                command=command or " ".join(sys.argv),
                inputs=_assembly_inputs(plan),
            )
        if r.deepseek_as == "glm4_moe":
            if base is not None:
                raise ConfigError("base: the Glm4-MoE output is assembled by tensor name; pass base=None")
            return write_glm4_moe(
                plan,
                Path(out).expanduser(),
                force=force,
                log=log or _quiet,
                command=command or " ".join(sys.argv),
                inputs=_assembly_inputs(plan),
            )
        built = assemble_model(plan, log, base=base)
        (log or _quiet)(f"writing {out}")
        return save_grown(
            built.model,
            out,
            tokenizer_from=plan.base_path,
            dtype=plan.dtype,
            command=command or " ".join(sys.argv),
            recipe=r.to_dict(),
            inputs=_assembly_inputs(plan),
            bricks=inventory(plan, built.layers, built.max_cosine, out),
            force=force,
        )
    finally:
        plan.close()


# --------------------------------------------------------------------------------------------- grow
def _checked_moe(moe_ref: str | Path, cfg: GrowConfig) -> tuple[Path, LMConfig]:
    """The MoE's directory and config, refused unless it is a softmax top-k MoE (and the domain known)."""
    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import lm_config_of, read_config

    moe_path = resolve_model(moe_ref)
    lm_cfg = lm_config_of(read_config(moe_path))
    if lm_cfg.moe is None:
        raise ConfigError(f"{moe_path} is a dense model; upcycle or assemble an MoE first")
    if lm_cfg.moe_config().router != "softmax_topk":
        raise ConfigError(f"grow supports softmax_topk routers, {moe_path} uses {lm_cfg.moe_config().router!r}")
    check_domain(cfg.domain, "domain")
    return moe_path, lm_cfg


def _load_moe(moe_path: Path, lm_cfg: LMConfig, log: Log) -> tuple[LM, Any]:
    """The MoE in fp32 with its tokenizer; warns when its top-k gates are not renormalised."""
    from lmbricks.nn.load import load_model

    log(f"loading {moe_path}")
    moe, tokenizer = load_model(moe_path, dtype=torch.float32)
    if tokenizer is None:
        raise ConfigError(f"{moe_path} has no tokenizer files")
    if not lm_cfg.moe_config().renormalize:
        warnings.warn(
            "the model does not renormalise its top-k gates: adding an expert changes every token's gates",
            GrowWarning,
            stacklevel=3,
        )
    return moe, tokenizer


def grow_expert(
    moe_ref: str | Path,
    cfg: GrowConfig,
    out: str | Path,
    *,
    force: bool = False,
    log: Log | None = None,
    command: str | None = None,
) -> Path:
    """Add ``cfg.expert`` to an MoE directory and write the grown model (see :func:`grow` for the fields).

    Returns:
        ``out``.
    """
    say: Log = log or _quiet
    out = check_destination(out, force, [moe_ref, cfg.expert, cfg.base])
    moe_path, lm_cfg = _checked_moe(moe_ref, cfg)
    recorded = recorded_inventory(moe_path)
    base_ref = cfg.base or recorded.base
    src, base_path = open_expert(cfg.expert, base_ref, lm_cfg, "expert")
    try:
        moe, tokenizer = _load_moe(moe_path, lm_cfg, say)
        new = new_router_rows(moe, tokenizer, cfg, recorded, say)
        say(f"reading the new expert from {src.label}")
        grown = grow_model(
            moe, {i: src.ffn(i) for i in new.layers}, {i: new.rows[li] for li, i in enumerate(new.layers)}
        )
        del moe
        inputs: dict[str, Path] = {"moe_model": moe_path, "expert": src.brick_path or src.path}
        if base_path is not None:
            inputs["base_model"] = base_path
        recipe = {
            "grow": {
                "expert": cfg.expert,
                "domain": cfg.domain,
                "base": base_ref,
                "domain_tokens": cfg.domain_tokens,
                "center": new.centred,
            }
        }
        say(f"writing {out}")
        return save_grown(
            grown,
            out,
            tokenizer_from=moe_path,
            dtype=torch_dtype(cfg.dtype, stored_dtype(moe_path)),
            command=command or " ".join(sys.argv),
            recipe=recipe,
            inputs=inputs,
            bricks=grown_inventory(recorded, cfg, src, (moe_path, lm_cfg), out, new),
            force=force,
        )
    finally:
        src.close()


def grow(
    moe_ref: str | Path,
    expert: str,
    out: str | Path,
    *,
    domain: str,
    base: str | None = None,
    domain_tokens: int = 2048,
    center: bool = True,
    dtype: str | None = None,
    seed: int = 0,
    force: bool = False,
    log: Log | None = None,
    command: str | None = None,
) -> Path:
    """Add one expert to an MoE directory and write the grown model.

    Args:
        moe_ref: the MoE (Mixtral / Qwen2-MoE / lmbricks directory).
        expert: a fine-tune (directory, registry name, ``path+lora``) or a brick (directory or
            catalogue name, merged into the base's FFN).
        out: the output directory (refused if it exists, unless ``force``).
        domain: the corpus domain that initialises the new router row.
        base: the dense base model (default: the one recorded in the MoE's lmbricks.json); needed
            for bricks.
        domain_tokens: training tokens of the domain read for its mean.
        center: subtract the mean over the existing experts' recorded domains.
        dtype: storage dtype (default: the MoE's).
        seed: document shuffle seed.
        force: replace ``out``.
        log: one-line progress messages.
        command: recorded in lmbricks.json.

    Returns:
        ``out``.
    """
    from lmbricks.config import validate

    fields = {
        "expert": expert,
        "domain": domain,
        "base": base,
        "domain_tokens": domain_tokens,
        "center": center,
        "dtype": dtype,
        "seed": seed,
    }
    cfg = validate(GrowConfig, fields, "grow options")
    return grow_expert(moe_ref, cfg, out, force=force, log=log, command=command)
