"""Hugging Face interop: config.json <-> LMConfig and HF tensor names <-> LM parameters.

Supported families: Llama, Mistral, Qwen2 (dense), Mixtral and Qwen2-MoE (sparse). The tensor
layout on disk is the classic per-expert one that ``save_pretrained`` writes
(``...experts.{e}.w1.weight`` for Mixtral, ``...experts.{e}.gate_proj.weight`` for Qwen2-MoE).

Export picks the family that expresses the model exactly: dense -> Llama (Qwen2 with q/k/v biases,
Mistral with a sliding window); softmax top-k MoE -> Mixtral (renormalised, no shared expert, every
layer MoE) or Qwen2-MoE (shared expert, no renormalisation, MoE every N layers). Dense models with a
ReLU-family FFN export ``hidden_act`` relu (ReGLU) or relu2 (squared-ReLU GLU); a FATReLU threshold
T > 0 is not expressible there. Anything else is written in the nearest layout, and config.json's
``lmbricks`` section marks it
``"transformers_exact": false``: ``lmbricks.load_model`` reads it exactly, ``from_pretrained`` does not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.moe.hf import HF_MOE_KEYS, moe_fields_from_hf
from lmbricks.nn.config import ARCHITECTURES, LMConfig
from lmbricks.nn.ffn import GatedFFN
from lmbricks.nn.model import LM, Block

# Where each family keeps the feed-forward block of layer i, and its expert projections' names.
_FFN_PREFIX = {"mixtral": "block_sparse_moe", "qwen2_moe": "mlp"}
_EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2"), "qwen2_moe": ("gate_proj", "up_proj", "down_proj")}


# ---------------------------------------------------------------------------------------- configs
def config_from_hf(hf: Mapping[str, Any]) -> LMConfig:
    """Translate a config.json dictionary into an :class:`LMConfig` (ConfigError naming the field).

    Args:
        hf: the parsed config.json of a Llama, Mistral, Qwen2, Mixtral or Qwen2-MoE model.

    Returns:
        The equivalent LMConfig, with ``family`` set to the source ``model_type``.
    """
    family = _supported_family(hf)
    qkv_bias, window = _attention_options(hf, family)
    moe, moe_every, dense_layers = _moe_options(hf, family)
    return LMConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or None,
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        activation=_ACT_FROM_HF[hf.get("hidden_act", "silu")],
        rope_theta=float(_rope(hf).get("rope_theta", hf.get("rope_theta", 10000.0))),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        qkv_bias=qkv_bias,
        sliding_window=window,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        moe=moe,
        moe_every=moe_every,
        dense_layers=dense_layers,
        family=family,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
        extra={k: v for k, v in hf.items() if k in _KEPT_EXTRA},
    )


def _rope(hf: Mapping[str, Any]) -> Mapping[str, Any]:
    return hf.get("rope_parameters") or hf.get("rope_scaling") or {}


def _supported_family(hf: Mapping[str, Any]) -> str:
    """The model_type; ConfigError for what lmbricks.nn cannot compute (families, activations, biases, RoPE)."""
    family = hf.get("model_type")
    if not isinstance(family, str) or family not in ARCHITECTURES:
        raise ConfigError(
            f"config.json model_type {family!r} is not supported by lmbricks.nn (supported: {', '.join(ARCHITECTURES)})"
        )
    act = hf.get("hidden_act", "silu")
    allowed = _ACT_FROM_HF if family not in HF_MOE_KEYS else {"silu": "swiglu"}
    if act not in allowed:
        raise ConfigError(f"config.json hidden_act {act!r}: {family} is supported with {', '.join(map(repr, allowed))}")
    if hf.get("mlp_bias"):
        raise ConfigError("config.json mlp_bias=true is not supported")
    rope = _rope(hf)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConfigError(f"config.json rope_parameters.rope_type {rope_type!r}: only 'default' is supported")
    if family == "llama" and hf.get("attention_bias"):
        raise ConfigError("config.json attention_bias=true (a bias on o_proj too) is not supported")
    if family in ("qwen2", "qwen2_moe") and hf.get("use_sliding_window"):
        raise ConfigError("config.json use_sliding_window=true (Qwen2 per-layer windows) is not supported")
    return family


def _attention_options(hf: Mapping[str, Any], family: str) -> tuple[bool, int | None]:
    """(q/k/v biases, sliding window): Qwen2 has the biases, Mistral and Mixtral the window."""
    qkv_bias = family == "qwen2" or (family == "qwen2_moe" and bool(hf.get("qkv_bias", True)))
    window = hf.get("sliding_window") if family in ("mistral", "mixtral") else None
    return qkv_bias, window


def _moe_options(hf: Mapping[str, Any], family: str) -> tuple[dict[str, Any] | None, int, tuple[int, ...]]:
    """(LMConfig.moe, moe_every, dense_layers) of a Mixtral or Qwen2-MoE config; (None, 1, ()) if dense."""
    if family not in HF_MOE_KEYS:
        return None, 1, ()
    moe = moe_fields_from_hf(hf)
    if family == "mixtral":
        return moe, 1, ()
    return moe, hf.get("decoder_sparse_step", 1), tuple(hf.get("mlp_only_layers") or ())


# config.json hidden_act <-> LMConfig.activation of a dense model. fatrelu exports as "relu" (what
# transformers computes: equal when activation_threshold is 0), its threshold in the lmbricks section.
_ACT_FROM_HF = {"silu": "swiglu", "relu": "reglu", "relu2": "relu2"}
_ACT_TO_HF = {"swiglu": "silu", "reglu": "relu", "relu2": "relu2", "fatrelu": "relu"}

# HF keys we carry through a round trip untouched (they do not change the maths).
_KEPT_EXTRA = {"initializer_range", "router_aux_loss_coef", "output_router_logits", "use_cache"}


def export_family(cfg: LMConfig) -> tuple[str, str | None]:
    """The HF family to export ``cfg`` to and, if transformers cannot express it exactly, why not.

    Returns:
        (family, None) when exact; (nearest family, reason) otherwise.
    """
    if cfg.moe is None:
        why = None
        if cfg.activation == "fatrelu" and cfg.activation_threshold > 0:
            why = f"fatrelu threshold {cfg.activation_threshold} (transformers computes plain relu)"
        if cfg.qkv_bias:
            return "qwen2", why
        if cfg.sliding_window is not None or cfg.family == "mistral":
            return "mistral", why
        return "llama", why
    m = cfg.moe_config()
    shared = getattr(m, "shared_expert_intermediate_size", 0) or 0
    reasons = []
    if m.router != "softmax_topk":
        reasons.append(f"router {m.router!r}")
    if m.activation != "swiglu":
        reasons.append(f"activation {m.activation!r}")
    if getattr(m, "capacity_factor", None) is not None:
        reasons.append("capacity_factor")
    mixtral_ok = m.renormalize and not shared and cfg.moe_every == 1 and not cfg.dense_layers and not cfg.qkv_bias
    if mixtral_ok and (cfg.family != "qwen2_moe"):
        family = "mixtral"
    else:
        family = "qwen2_moe"
        if cfg.sliding_window is not None:
            reasons.append("sliding_window with Qwen2-MoE")
    return family, ("; ".join(reasons) or None)


def config_to_hf(cfg: LMConfig, family: str, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The config.json dictionary of ``cfg`` in ``family``'s layout (plus the ``lmbricks`` section)."""
    hf: dict[str, Any] = dict(cfg.extra)
    hf.update(
        architectures=[ARCHITECTURES[family]],
        model_type=family,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_theta": cfg.rope_theta, "rope_type": "default"},
        rms_norm_eps=cfg.rms_norm_eps,
        hidden_act=_ACT_TO_HF[cfg.activation],
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        dtype=str(dtype).removeprefix("torch."),
    )
    if family == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    if family in ("mistral", "mixtral"):
        hf["sliding_window"] = cfg.sliding_window
    if family in ("qwen2", "qwen2_moe"):
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
    if cfg.moe is not None:
        m = cfg.moe_config()
        hf.update({theirs: getattr(m, ours) for ours, theirs in HF_MOE_KEYS[family].items()})
        if family == "mixtral":
            hf["router_jitter_noise"] = 0.0
        else:
            hf.update(
                norm_topk_prob=bool(m.renormalize),
                decoder_sparse_step=cfg.moe_every,
                mlp_only_layers=list(cfg.dense_layers),
                qkv_bias=cfg.qkv_bias,
            )
    _, reason = export_family(cfg)
    hf["lmbricks"] = {
        "config": cfg.to_dict(),
        "transformers_exact": reason is None,
        "inexact_because": reason,
    }
    return hf


# ---------------------------------------------------------------------------------------- weights
def load_hf_weights(model: LM, get: Callable[[str], Tensor], keys: set[str], family: str) -> None:
    """Fill ``model``'s parameters from HF-named tensors.

    Args:
        model: an LM whose config matches the checkpoint (built by ``config_from_hf``).
        get: returns the tensor of one HF name (lazy, e.g. ``CheckpointReader.get``).
        keys: all tensor names in the checkpoint (to detect missing / unexpected ones).
        family: the checkpoint's ``model_type``.

    Raises:
        CheckpointError naming the first missing or mis-shaped tensor, or the unexpected ones.
    """
    used: set[str] = set()

    def take(name: str) -> Tensor:
        if name not in keys:
            raise CheckpointError(f"tensor {name} is missing from the checkpoint")
        used.add(name)
        return get(name)

    sd: dict[str, Tensor] = {
        "embed.weight": take("model.embed_tokens.weight"),
        "norm.weight": take("model.norm.weight"),
    }
    if not model.cfg.tie_embeddings:
        sd["lm_head.weight"] = take("lm_head.weight")
    elif "lm_head.weight" in keys:
        used.add("lm_head.weight")  # some tied checkpoints store the copy anyway
    for i, block in enumerate(model.layers):
        assert isinstance(block, Block)
        p, q = f"model.layers.{i}.", f"layers.{i}."
        sd[q + "attn_norm.weight"] = take(p + "input_layernorm.weight")
        sd[q + "ffn_norm.weight"] = take(p + "post_attention_layernorm.weight")
        a = p + "self_attn."
        sd[q + "attn.qkv.weight"] = torch.cat([take(a + f"{x}_proj.weight") for x in "qkv"])
        if model.cfg.qkv_bias:
            sd[q + "attn.qkv.bias"] = torch.cat([take(a + f"{x}_proj.bias") for x in "qkv"])
        sd[q + "attn.o.weight"] = take(a + "o_proj.weight")
        if isinstance(block.ffn, GatedFFN):
            m = p + "mlp."
            sd[q + "ffn.gate_up.weight"] = torch.cat([take(m + "gate_proj.weight"), take(m + "up_proj.weight")])
            sd[q + "ffn.down.weight"] = take(m + "down_proj.weight")
        else:
            from lmbricks.nn.moe_io import moe_state_from_hf

            sd.update({q + "ffn." + k: v for k, v in moe_state_from_hf(block.ffn, p, family, take).items()})
    unexpected = sorted(k for k in keys - used if not k.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise CheckpointError(f"unexpected tensor(s) in the checkpoint: {', '.join(unexpected[:5])}")
    _load_exact(model, sd)


def hf_state_dict(model: LM, family: str) -> dict[str, Tensor]:
    """The model's tensors under ``family``'s HF names (q/k/v and gate/up split back apart)."""
    cfg = model.cfg
    assert cfg.head_dim is not None and cfg.num_kv_heads is not None
    out: dict[str, Tensor] = {
        "model.embed_tokens.weight": model.embed.weight,
        "model.norm.weight": model.norm.weight,
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    sizes = [cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim]
    for i, block in enumerate(model.layers):
        assert isinstance(block, Block)
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = block.attn_norm.weight
        out[p + "post_attention_layernorm.weight"] = block.ffn_norm.weight
        for x, w in zip("qkv", block.attn.qkv.weight.split(sizes), strict=True):
            out[p + f"self_attn.{x}_proj.weight"] = w
        if block.attn.qkv.bias is not None:
            for x, b in zip("qkv", block.attn.qkv.bias.split(sizes), strict=True):
                out[p + f"self_attn.{x}_proj.bias"] = b
        out[p + "self_attn.o_proj.weight"] = block.attn.o.weight
        if isinstance(block.ffn, GatedFFN):
            gate, up = block.ffn.gate_up.weight.chunk(2)
            out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
            out[p + "mlp.down_proj.weight"] = block.ffn.down.weight
        else:
            from lmbricks.nn.moe_io import moe_state_to_hf

            out.update(moe_state_to_hf(block.ffn, p, family))
    return {k: v.detach().contiguous() for k, v in out.items()}


def _load_exact(model: LM, sd: dict[str, Tensor]) -> None:
    """load_state_dict that names the parameter whose shape differs (torch's message is long)."""
    own = model.state_dict()
    for k, v in sd.items():
        if k not in own:
            raise CheckpointError(f"internal: no parameter {k} in the model")
        if tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"tensor for {k} has shape {tuple(v.shape)}, the config implies {tuple(own[k].shape)}"
            )
    missing = [k for k in own if k not in sd and not (model.cfg.tie_embeddings and k == "lm_head.weight")]
    if missing:
        raise CheckpointError(f"no checkpoint tensor for parameter(s): {', '.join(missing[:5])}")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v)
