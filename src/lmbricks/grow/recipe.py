"""MoE assembly recipes: mergekit-moe's YAML schema plus lmbricks' ``domain`` and ``brick`` fields.

Accepted (as mergekit-moe users write it)::

    base_model: smollm2-135m-instruct     # attention, embeddings and norms come from here
    gate_mode: hidden                     # hidden | hidden_avg | cheap_embed | random | uniform_random
    dtype: bfloat16                       # output dtype (default: the base's stored dtype)
    experts_per_token: 2                  # top-k (default 2, as mergekit)
    experts:
      - source_model: path/to/finetune    # a model directory, registry name or "path+lora_dir"
        positive_prompts: ["def f(x):"]
        negative_prompts: ["Once upon a time"]   # optional
        noise_scale: 0.01                 # optional: Gaussian noise added to the expert's weights
        residual_scale: 0.5               # optional: scales the expert's down projection
    shared_experts:                       # optional: Qwen2-MoE output (several: one wider shared expert)
    # a Qwen3 base gives a Qwen3-MoE output (no shared expert)
      - source_model: path/to/base
    architecture: mixtral                 # optional: mixtral | qwen | qwen3 | deepseek (with deepseek_as)

lmbricks' extensions (documented as such in docs/grow.md):

* ``brick:`` instead of ``source_model:`` -- the expert is the base FFN with that LoRA brick merged
  in (a brick directory or a catalogue name such as ``zh``);
* ``domain:`` per expert and ``gate_mode: domain`` -- the router row is the mean router input of the
  base over that domain's training text (centred on the experts' mean when ``domain_center``);
* ``non_experts: base | average`` -- attention, embeddings and norms from the base (mergekit) or
  averaged over the experts' sources (Branch-Train-MiX);
* ``domain_tokens``, ``domain_center``, ``seed``;
* ``deepseek_as: qwen2_moe | glm4_moe`` with ``architecture: deepseek`` -- mergekit-moe's DeepSeek-MoE
  layout (routed experts plus ungated shared experts) written exactly as Qwen2-MoE, or with
  DeepSeek-V3's sigmoid, group-limited router (``n_group``, ``topk_group``) as Glm4-MoE
  (:mod:`lmbricks.grow.deepseek`).

Everything is checked here or in :func:`lmbricks.grow.assemble.plan_assembly` before any output is
written; an error names the field (``experts[2].positive_prompts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmbricks.config import load_yaml, validate
from lmbricks.errors import ConfigError
from lmbricks.grow.deepseek import check_deepseek
from lmbricks.merge.recipe import DTYPES  # mergekit's dtype names and aliases, as merge recipes take them

#: Router initialisations. mergekit-moe's ``hidden`` is the last prompt token (``hidden_last`` alias).
GATE_MODES: tuple[str, ...] = (
    "hidden",
    "hidden_last",
    "hidden_avg",
    "cheap_embed",
    "random",
    "uniform_random",
    "domain",
)
#: Gate modes that read each expert's prompts.
PROMPT_MODES: tuple[str, ...] = ("hidden", "hidden_last", "hidden_avg", "cheap_embed")
ARCHITECTURES = {
    "mixtral": "mixtral",
    "qwen": "qwen2_moe",
    "qwen2_moe": "qwen2_moe",
    "qwen3": "qwen3_moe",
    "qwen3_moe": "qwen3_moe",
}
#: Base model types whose MoE output is Qwen3-MoE.
QWEN3_FAMILIES = ("qwen3",)
#: ``architecture:`` values that ask for it.
QWEN3_NAMES = ("qwen3", "qwen3_moe")


def check_qwen3_plan(recipe: MoERecipe, base_type: str | None) -> None:
    """Refuse a recipe that cannot give the Qwen3-MoE output its base or ``architecture`` implies.

    Raises:
        ConfigError: ``architecture: qwen3`` over a non-Qwen3 base (its attention has no q/k norms to
            write), another architecture over a Qwen3 base, or a shared expert with a Qwen3 base.
    """
    wants = recipe.architecture in QWEN3_NAMES
    if wants and base_type not in QWEN3_FAMILIES:
        raise ConfigError(
            f"architecture: {recipe.architecture!r} needs a Qwen3 base_model; {recipe.base_model} is a "
            f"{base_type!r} model (Qwen3-MoE's attention normalises queries and keys per head, which "
            "a Llama / Mistral / Qwen2 attention does not)"
        )
    if base_type not in QWEN3_FAMILIES:
        return
    if recipe.architecture is not None and not wants:
        raise ConfigError(
            f"architecture: {recipe.architecture!r} cannot hold a Qwen3 base's attention (q/k norms); "
            "a Qwen3 base gives Qwen3-MoE (architecture: qwen3)"
        )
    if recipe.shared_experts:
        raise ConfigError(
            "shared_experts: Qwen3-MoE has no shared expert (transformers' Qwen3MoeSparseMoeBlock); "
            "drop it, or use a Qwen2 base for a Qwen2-MoE output with a shared expert"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertSpec(_Strict):
    """One entry of ``experts:`` or ``shared_experts:``."""

    source_model: str | None = Field(None, description="model directory, registry name or path+lora")
    brick: str | None = Field(None, description="lmbricks: LoRA brick merged into the base FFN")
    positive_prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    domain: str | None = Field(None, description="lmbricks: corpus domain for gate_mode domain")
    noise_scale: float | None = Field(None, ge=0, description="std of Gaussian noise added to the FFN")
    residual_scale: float | None = Field(None, description="multiplies the expert's down projection")

    def label(self) -> str:
        """How the expert is named in messages and in lmbricks.json."""
        return self.brick if self.brick is not None else str(self.source_model)


class MoERecipe(_Strict):
    """A validated assembly recipe (see the module docstring)."""

    base_model: str
    experts: list[ExpertSpec]
    gate_mode: str = "hidden"
    dtype: str | None = None
    experts_per_token: int = 2
    shared_experts: list[ExpertSpec] | None = None
    architecture: str | None = None
    # lmbricks extensions
    deepseek_as: Literal["qwen2_moe", "glm4_moe"] | None = Field(
        None, description="with architecture deepseek: write its layout as Qwen2-MoE or Glm4-MoE (exact)"
    )
    routed_scaling_factor: float | None = Field(None, gt=0, description="deepseek: routed gates times this")
    scoring_func: Literal["softmax", "sigmoid"] | None = Field(None, description="deepseek: router scores")
    n_group: int | None = Field(None, ge=1, description="deepseek (glm4_moe): expert groups of the router")
    topk_group: int | None = Field(None, ge=1, description="deepseek (glm4_moe): groups each token may use")
    non_experts: Literal["base", "average"] = "base"
    domain_tokens: int = Field(4096, gt=0, description="tokens of each domain's train split read")
    domain_center: bool = True
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def output_family(self) -> str:
        """``glm4_moe`` for it, ``qwen2_moe`` with a shared expert, else ``mixtral`` (a base may force Qwen2-MoE)."""
        if self.deepseek_as == "glm4_moe":
            return "glm4_moe"
        return "qwen2_moe" if self.shared_experts else "mixtral"

    @property
    def ungated_shared(self) -> bool:
        """The shared expert is DeepSeek's (ungated): written with a zero gate and a doubled down projection."""
        return self.deepseek_as is not None

    @property
    def folded_scale(self) -> float | None:
        """``routed_scaling_factor`` when it is folded into the routed experts (Qwen2-MoE has no such field)."""
        return self.routed_scaling_factor if self.deepseek_as == "qwen2_moe" else None


class GrowConfig(_Strict):
    """How an MoE grows by one expert (:func:`lmbricks.grow.grow`; recorded as the ``grow`` recipe)."""

    expert: str = Field(description="a fine-tune (directory, registry name, path+lora) or a brick")
    domain: str = Field(description="the corpus domain that initialises the new router row")
    base: str | None = Field(None, description="the dense base (default: recorded in the MoE's lmbricks.json)")
    domain_tokens: int = Field(2048, description="training tokens of the domain read for its mean")
    center: bool = Field(True, description="subtract the mean over the existing experts' recorded domains")
    dtype: str | None = Field(None, description="storage dtype (default: the MoE's)")
    seed: int = Field(0, description="document shuffle seed")


def check_recipe(r: MoERecipe) -> None:
    """The rules a schema cannot express; each error names the field.

    Raises:
        ConfigError: unknown gate mode, dtype or architecture; an expert count below
            ``experts_per_token``; an expert with both or neither of ``source_model``/``brick``; missing
            prompts for a prompt-based gate mode; a missing ``domain`` for ``gate_mode: domain``;
            prompts or a domain on one of several gated shared experts.
    """
    if r.gate_mode not in GATE_MODES:
        raise ConfigError(f"gate_mode: unknown gate mode {r.gate_mode!r} (choose from {', '.join(GATE_MODES)})")
    if r.dtype is not None and r.dtype not in DTYPES:
        raise ConfigError(f"dtype: unknown dtype {r.dtype!r} (choose from {', '.join(DTYPES)})")
    check_deepseek(r)
    if r.architecture is not None and r.deepseek_as is None:
        if r.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture: {r.architecture!r} is not an output lmbricks writes (mixtral, qwen, qwen3, "
                "deepseek with deepseek_as)"
            )
        if r.architecture not in QWEN3_NAMES and ARCHITECTURES[r.architecture] != r.output_family:
            raise ConfigError(
                f"architecture: {r.architecture!r} does not match the recipe: "
                + ("a shared expert needs qwen" if r.shared_experts else "qwen needs a shared expert")
            )
    if not r.experts:
        raise ConfigError("experts: at least one expert is needed")
    if r.experts_per_token < 1:
        raise ConfigError(f"experts_per_token must be >= 1, got {r.experts_per_token}")
    if len(r.experts) < r.experts_per_token:
        raise ConfigError(
            f"experts: {len(r.experts)} expert(s) is fewer than experts_per_token ({r.experts_per_token})"
        )
    _check_several_shared(r)
    groups = [("experts", r.experts), ("shared_experts", r.shared_experts or [])]
    for group, specs in groups:
        for i, e in enumerate(specs):
            where = f"{group}[{i}]"
            if (e.source_model is None) == (e.brick is None):
                raise ConfigError(f"{where}: give exactly one of source_model or brick")
            if e.brick is not None and "+" in e.brick:
                raise ConfigError(f"{where}.brick: a brick is a directory or catalogue name, not path+adapter")
    for group, specs in groups:
        for i, e in enumerate(specs):
            for key in ("positive_prompts", "negative_prompts"):
                for j, prompt in enumerate(getattr(e, key) or []):
                    if not prompt.strip():
                        raise ConfigError(f"{group}[{i}].{key}[{j}]: an empty prompt has nothing to route on")
    for i, e in enumerate(r.experts):
        where = f"experts[{i}]"
        if r.gate_mode in PROMPT_MODES and not e.positive_prompts:
            raise ConfigError(f"{where}.positive_prompts: gate_mode {r.gate_mode!r} needs prompts for every expert")
        if r.gate_mode == "domain" and not e.domain:
            raise ConfigError(f"{where}.domain: gate_mode 'domain' needs a domain for every expert")
    if r.gate_mode in PROMPT_MODES and len(r.experts) > 1:
        first = (tuple(r.experts[0].positive_prompts or ()), tuple(r.experts[0].negative_prompts or ()))
        if all((tuple(e.positive_prompts or ()), tuple(e.negative_prompts or ())) == first for e in r.experts[1:]):
            raise ConfigError("experts: every expert has the same prompts, so the router cannot tell them apart")


def _check_several_shared(r: MoERecipe) -> None:
    """Several gated shared experts are written as one Qwen2-MoE shared expert: one gate, set by no prompt."""
    if r.ungated_shared or not r.shared_experts or len(r.shared_experts) < 2:
        return
    for i, e in enumerate(r.shared_experts):
        for key in ("positive_prompts", "negative_prompts", "domain"):
            if getattr(e, key):
                raise ConfigError(
                    f"shared_experts[{i}].{key}: {len(r.shared_experts)} shared experts are written as one "
                    "Qwen2-MoE shared expert (their FFNs side by side) behind one gate, which no single "
                    "expert's prompts or domain can set; drop it, or give one shared expert"
                )


def parse_moe_recipe(data: Any, source: str = "recipe") -> MoERecipe:
    """Validate an assembly recipe given as a mapping (parsed YAML).

    Raises:
        ConfigError: naming the field, e.g. ``recipe.yaml: unknown key 'experts[0].source_modle' (did you
            mean 'experts[0].source_model'?)``.
    """
    recipe = validate(MoERecipe, data, source, what="recipe")
    try:
        check_recipe(recipe)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return recipe


def load_moe_recipe(path: str | Path) -> MoERecipe:
    """Read and validate a YAML assembly recipe.

    Raises:
        ConfigError: unreadable file, bad YAML, or a rule broken (naming the field).
    """
    return parse_moe_recipe(load_yaml(path), str(path))
