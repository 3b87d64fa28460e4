"""``architecture: deepseek`` recipes: which DeepSeek-MoE layouts lmbricks writes exactly, and the refusals.

DeepSeek-MoE's block is ``y = r * sum_k g_k E_k(x) + sum_s S_s(x)``: routed experts behind a router,
times ``routed_scaling_factor`` r, plus ``n_shared_experts`` ungated shared experts. transformers'
DeepSeek-V2/V3 and Glm4-MoE build the shared experts as **one** MLP of width
``moe_intermediate_size * n_shared_experts`` (``DeepseekV3MoE.shared_experts``,
``Glm4MoeMoE.shared_experts``); a SwiGLU is a sum over its neurons, so that MLP is the shared experts'
gate and up rows and down columns concatenated, which is what lmbricks writes.

Two targets (``deepseek_as``), since transformers' own ``deepseek_v2`` / ``deepseek_v3`` cannot hold a
Llama attention (:data:`DEEPSEEK_REFUSAL`):

* ``qwen2_moe``: softmax top-k, renormalised, written as Qwen2-MoE. Its one gated shared expert
  holds all shared experts concatenated, gate row 0 (``sigmoid(0) = 1/2``) and down projection
  doubled, so ``1/2 (2 S(x)) = S(x)`` bit for bit. r is folded into the routed experts (a power of
  two only: exact). No group-limited routing (Qwen2-MoE routes over all experts).
* ``glm4_moe``: DeepSeek-V3's router as transformers' Glm4-MoE computes it (GQA attention as
  Llama / Qwen2, no q/k norm): sigmoid scores, experts split into ``n_group`` groups, each token
  keeps the ``topk_group`` groups with the largest sum of their two best scores and picks its top-k
  inside them; gates renormalised and times r (any r, stored in the config).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lmbricks.errors import ConfigError

if TYPE_CHECKING:
    from lmbricks.grow.recipe import MoERecipe

#: Why ``architecture: deepseek`` alone is refused (docs/grow.md, "Parity with mergekit-moe").
DEEPSEEK_REFUSAL = (
    "mergekit-moe's DeepSeek output is model_type 'deepseek' (DeepSeek-MoE 16B), whose modelling code "
    "exists only as remote code on the Hugging Face Hub (trust_remote_code); transformers has no such "
    "model type, and its deepseek_v2/v3 use multi-head latent attention, which a Llama attention cannot "
    "be written as. Set deepseek_as: qwen2_moe to write the DeepSeek layout (routed experts plus "
    "ungated shared experts) exactly as Qwen2-MoE, or deepseek_as: glm4_moe for DeepSeek-V3's sigmoid, "
    "group-limited router"
)
#: The DeepSeek-only recipe fields (refused, when set, without architecture: deepseek).
DEEPSEEK_FIELDS = ("deepseek_as", "routed_scaling_factor", "scoring_func", "n_group", "topk_group")


def _check_qwen2_target(r: MoERecipe) -> None:
    """What Qwen2-MoE's softmax router over all experts cannot give exactly."""
    if r.scoring_func not in (None, "softmax"):
        raise ConfigError(
            f"scoring_func: {r.scoring_func!r} (DeepSeek-V3) gates by sigmoid affinities renormalised over the "
            "selected experts, which Qwen2-MoE's softmax router cannot give; only softmax is exact "
            "(deepseek_as: glm4_moe writes the sigmoid router)"
        )
    if r.routed_scaling_factor is not None and math.frexp(r.routed_scaling_factor)[0] != 0.5:
        raise ConfigError(
            f"routed_scaling_factor: {r.routed_scaling_factor} is not a power of two: folded into the routed "
            "experts' down projections it would round every weight, so the output would not compute the "
            "DeepSeek model exactly; use 1 or another power of two (deepseek_as: glm4_moe stores any factor)"
        )
    for key in ("n_group", "topk_group"):
        if getattr(r, key) is not None:
            raise ConfigError(
                f"{key}: Qwen2-MoE routes over all experts, with no expert groups; the softmax group-limited "
                "router is DeepSeek-V2's, whose latent attention cannot hold a Llama attention. "
                "deepseek_as: glm4_moe writes group-limited routing (with sigmoid scores, as DeepSeek-V3)"
            )


def check_groups(n_experts: int, top_k: int, n_group: int, topk_group: int) -> None:
    """Refuse expert groups transformers' group-limited router cannot run as written.

    Raises:
        ConfigError: ``n_group`` not dividing the experts, groups of one expert (a group is scored by
            its two best experts), ``topk_group`` above ``n_group``, or fewer experts in the kept
            groups than ``experts_per_token`` (naming the field).
    """
    if n_experts % n_group:
        raise ConfigError(f"n_group: {n_group} groups do not divide the {n_experts} experts")
    if n_group > 1 and n_experts // n_group < 2:
        raise ConfigError(
            f"n_group: {n_group} groups of {n_experts // n_group} expert; transformers scores a group by the "
            "sum of its two best experts, so every group needs at least two"
        )
    if topk_group > n_group:
        raise ConfigError(f"topk_group: {topk_group} is more than the {n_group} group(s) (n_group)")
    if topk_group * (n_experts // n_group) < top_k:
        raise ConfigError(
            f"topk_group: {topk_group} group(s) of {n_experts // n_group} experts hold fewer than "
            f"experts_per_token ({top_k}); a token could not pick its experts inside its groups"
        )


def _check_glm4_target(r: MoERecipe) -> None:
    """What Glm4-MoE's sigmoid, group-limited router needs."""
    if r.scoring_func == "softmax":
        raise ConfigError(
            "scoring_func: 'softmax' with deepseek_as: glm4_moe: transformers' Glm4MoeTopkRouter scores by "
            "sigmoid only; use scoring_func: sigmoid (the default here), or deepseek_as: qwen2_moe for softmax"
        )
    check_groups(len(r.experts), r.experts_per_token, r.n_group or 1, r.topk_group or 1)


def check_glm4_base(base_config: dict[str, Any]) -> bool:
    """Whether the base's q/k/v carry biases (Qwen2), refusing attentions Glm4-MoE's cannot be.

    Raises:
        ConfigError: sliding-window attention, a Llama bias on the output projection or on the FFN.
    """
    family = base_config.get("model_type")
    window = base_config.get("sliding_window")
    if window and (family == "mistral" or base_config.get("use_sliding_window")):
        raise ConfigError(
            f"base_model: its attention is sliding-window ({window} tokens), which Glm4-MoE's attention "
            "(deepseek_as: glm4_moe) is not; use deepseek_as: qwen2_moe or architecture: mixtral"
        )
    if family == "llama" and (base_config.get("attention_bias") or base_config.get("mlp_bias")):
        raise ConfigError(
            "base_model: a Llama with attention_bias or mlp_bias has biases on o_proj or the FFN, which "
            "Glm4-MoE has not (its biases are on q/k/v only)"
        )
    return family == "qwen2"


def check_deepseek(r: MoERecipe) -> None:
    """Refuse what the chosen DeepSeek-MoE target (``deepseek_as``) cannot give exactly.

    Raises:
        ConfigError: a DeepSeek field without ``architecture: deepseek``, ``architecture: deepseek``
            without ``deepseek_as``, the target's own refusals (:func:`_check_qwen2_target`,
            :func:`_check_glm4_target`), no shared expert, or a shared expert with prompts or a domain
            (each naming the field).
    """
    wants = r.architecture is not None and r.architecture.lower().startswith("deepseek")
    given = [k for k in DEEPSEEK_FIELDS if getattr(r, k) is not None]
    if given and not wants:
        raise ConfigError(f"{given[0]}: only with architecture: deepseek, got architecture: {r.architecture!r}")
    if not wants:
        return
    if r.deepseek_as == "glm4_moe":
        _check_glm4_target(r)
    else:
        _check_qwen2_target(r)
    if r.deepseek_as is None:
        raise ConfigError(f"architecture: {r.architecture!r}: {DEEPSEEK_REFUSAL}")
    if not r.shared_experts:
        raise ConfigError(
            "shared_experts: the DeepSeek layout has a shared expert; give one, or use architecture: mixtral"
        )
    for i, spec in enumerate(r.shared_experts):
        for key in ("positive_prompts", "negative_prompts", "domain"):
            if getattr(spec, key):
                raise ConfigError(
                    f"shared_experts[{i}].{key}: DeepSeek's shared expert is ungated (added with weight 1), so it "
                    "has no gate to set; drop it, or use architecture: qwen for a gated shared expert"
                )


__all__ = ["DEEPSEEK_FIELDS", "DEEPSEEK_REFUSAL", "check_deepseek", "check_glm4_base", "check_groups"]
