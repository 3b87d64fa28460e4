"""What each tensor of a supported architecture is, and which tensors a config implies.

Names and shapes are those ``transformers`` 5.x ``save_pretrained`` writes (checked against tiny
saved models in tests/checkpoint/test_archmap.py). In particular MoE experts are saved one tensor
per expert even though transformers 5 fuses them in memory:

* Mixtral: ``model.layers.{i}.block_sparse_moe.gate.weight`` (router, (E, H)) and
  ``model.layers.{i}.block_sparse_moe.experts.{e}.w1|w3.weight`` (gate/up, (I, H)), ``w2`` (down, (H, I));
* Qwen2-MoE: ``model.layers.{i}.mlp.gate.weight`` (router), ``mlp.experts.{e}.{gate,up,down}_proj.weight``,
  ``mlp.shared_expert.{gate,up,down}_proj.weight`` and ``mlp.shared_expert_gate.weight`` ((1, H));
* Qwen3-MoE: Qwen2-MoE's router and experts without the shared expert, Qwen3's q/k norms, no q/k/v
  biases (``attention_bias``); ``config.json`` names the expert count ``num_local_experts``.

:func:`tensor_role` also understands the fused in-memory names (``mlp.experts.gate_up_proj``,
``mlp.experts.down_proj``) in case a checkpoint stores them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lmbricks.errors import CheckpointError

RoleKind = Literal["embedding", "attention", "ffn", "router", "shared_expert_gate", "norm", "head", "other"]
ROLE_KINDS: tuple[str, ...] = ("embedding", "attention", "ffn", "router", "shared_expert_gate", "norm", "head", "other")

#: Supported architectures: lmbricks name -> (model_type values, ``architectures`` class names).
SUPPORTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llama": (("llama",), ("LlamaForCausalLM",)),
    "mistral": (("mistral",), ("MistralForCausalLM",)),
    "qwen2": (("qwen2",), ("Qwen2ForCausalLM",)),
    "qwen3": (("qwen3",), ("Qwen3ForCausalLM",)),
    "gemma3": (("gemma3_text",), ("Gemma3ForCausalLM",)),
    "mixtral": (("mixtral",), ("MixtralForCausalLM",)),
    "qwen2_moe": (("qwen2_moe",), ("Qwen2MoeForCausalLM",)),
    "qwen3_moe": (("qwen3_moe",), ("Qwen3MoeForCausalLM",)),
}
MOE_ARCHS = ("mixtral", "qwen2_moe", "qwen3_moe")
# Architectures whose attention normalises queries and keys per head.
_QK_NORM = ("gemma3", "qwen3", "qwen3_moe")
# Architectures whose sparse layers are Qwen-style (``mlp.gate`` + ``mlp.experts.{e}``), dense ones allowed.
_QWEN_MOE = ("qwen2_moe", "qwen3_moe")

# Names checkpoints may carry that transformers ignores on load (old non-persistent buffers).
IGNORABLE = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


@dataclass(frozen=True)
class TensorRole:
    """What one checkpoint tensor is.

    Attributes:
        kind: the role family (``ffn`` covers dense, routed-expert and shared-expert FFN matrices).
        layer: decoder layer index, None outside the layers.
        expert: routed expert index for MoE FFN tensors; None for dense FFNs, shared experts and
            fused expert stacks (whose first dimension is the expert).
        proj: normalised name: ``q k v o`` (attention); ``gate up down`` (FFN, experts included);
            ``shared_gate shared_up shared_down`` (Qwen2-MoE shared expert); ``experts_gate_up
            experts_down`` (fused stacks); ``router``; ``shared_expert_gate``; norms ``input_norm
            post_attention_norm pre_ffn_norm post_ffn_norm q_norm k_norm final_norm``; ``embed``,
            ``lm_head``; None for unrecognised tensors.
        part: ``weight`` or ``bias``.
    """

    kind: RoleKind
    layer: int | None
    expert: int | None
    proj: str | None
    part: str


_LAYER = r"model\.layers\.(?P<layer>\d+)\."
_PART = r"\.(?P<part>weight|bias)$"
_FFN_PROJ = {
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "w1": "gate",
    "w3": "up",
    "w2": "down",
}
_NORMS = {
    "input_layernorm": "input_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "pre_ffn_norm",
    "post_feedforward_layernorm": "post_ffn_norm",
}

# (regex, kind, proj or None to take from the match) in priority order.
_PATTERNS: list[tuple[re.Pattern[str], RoleKind, str | None]] = [
    (re.compile(r"^model\.embed_tokens" + _PART), "embedding", "embed"),
    (re.compile(r"^lm_head" + _PART), "head", "lm_head"),
    (re.compile(r"^model\.norm" + _PART), "norm", "final_norm"),
    (re.compile(_LAYER + r"self_attn\.(?P<proj>[qkvo])_proj" + _PART), "attention", None),
    (re.compile(_LAYER + r"self_attn\.(?P<proj>[qk]_norm)" + _PART), "norm", None),
    (re.compile(_LAYER + r"(?P<proj>" + "|".join(_NORMS) + ")" + _PART), "norm", None),
    (re.compile(_LAYER + r"mlp\.(?P<proj>gate_proj|up_proj|down_proj)" + _PART), "ffn", None),
    (
        re.compile(
            _LAYER
            + r"(?:block_sparse_moe|mlp)\.experts\.(?P<expert>\d+)\."
            + r"(?P<proj>w[123]|gate_proj|up_proj|down_proj)"
            + _PART
        ),
        "ffn",
        None,
    ),
    (re.compile(_LAYER + r"mlp\.shared_expert\.(?P<proj>gate_proj|up_proj|down_proj)" + _PART), "ffn", None),
    (re.compile(_LAYER + r"mlp\.shared_expert_gate" + _PART), "shared_expert_gate", "shared_expert_gate"),
    (re.compile(_LAYER + r"(?:block_sparse_moe|mlp)\.gate" + _PART), "router", "router"),
    (re.compile(_LAYER + r"mlp\.experts\.(?P<proj>gate_up_proj|down_proj)$"), "ffn", None),
]


def architecture_of(config: Mapping[str, Any]) -> str:
    """The lmbricks architecture name for a Hugging Face config (dict from config.json).

    Returns:
        One of ``llama mistral qwen2 qwen3 gemma3 mixtral qwen2_moe qwen3_moe``.

    Raises:
        CheckpointError: any other model type, listing the supported ones.
    """
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    for name, (types, _classes) in SUPPORTED.items():
        if model_type in types:
            return name
    for name, (_types, classes) in SUPPORTED.items():
        if any(a in classes for a in archs):
            return name
    supported = ", ".join(f"{n} ({'/'.join(t)})" for n, (t, _c) in SUPPORTED.items())
    hint = ""
    if model_type == "gemma3":
        hint = " (multimodal Gemma 3 is not supported; use a text-only Gemma3ForCausalLM checkpoint)"
    raise CheckpointError(
        f"config.json: model_type {model_type!r} / architectures {archs} not supported{hint}; supported: {supported}"
    )


def coverage() -> list[dict[str, Any]]:
    """What the map covers, as ``lmbricks merge architectures`` lists it.

    Returns:
        One dict per supported architecture: ``name``, ``model_types``, ``architectures`` (class
        names), ``moe`` (routed experts), ``shared_expert`` (Qwen2-MoE's), ``qk_norm`` (per-head q/k norms).
    """
    return [
        {"name": n, "model_types": list(t), "architectures": list(c), "moe": n in MOE_ARCHS,
         "shared_expert": n == "qwen2_moe", "qk_norm": n in _QK_NORM}
        for n, (t, c) in SUPPORTED.items()
    ]  # fmt: skip


def _check_arch(arch: str) -> None:
    if arch not in SUPPORTED:
        raise CheckpointError(f"architecture {arch!r} not supported; supported: {', '.join(SUPPORTED)}")


def tensor_role(arch: str, name: str) -> TensorRole:
    """Classify a Hugging Face tensor name (e.g. ``model.layers.3.mlp.gate_proj.weight``).

    Unrecognised names get kind ``other`` (with the layer index when the name has one), never an
    error, so callers can decide what to do with extras.

    Raises:
        CheckpointError: ``arch`` is not a supported architecture.
    """
    _check_arch(arch)
    for pattern, kind, proj in _PATTERNS:
        m = pattern.match(name)
        if not m:
            continue
        groups = m.groupdict()
        layer = int(groups["layer"]) if groups.get("layer") is not None else None
        expert = int(groups["expert"]) if groups.get("expert") is not None else None
        part = groups.get("part") or "weight"
        if proj is None:
            raw = groups["proj"]
            if kind == "norm":
                proj = _NORMS.get(raw, raw)
            elif kind == "attention":
                proj = raw
            elif raw in ("gate_up_proj", "down_proj") and "experts." in name and expert is None:
                proj = "experts_" + raw.removesuffix("_proj")
            elif ".shared_expert." in name:
                proj = "shared_" + _FFN_PROJ[raw]
            else:
                proj = _FFN_PROJ[raw]
        return TensorRole(kind, layer, expert, proj, part)
    m = re.match(_LAYER, name)
    return TensorRole(
        "other", int(m["layer"]) if m else None, None, None, "bias" if name.endswith(".bias") else "weight"
    )


# -- expected tensors ---------------------------------------------------------------------------
def _field(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CheckpointError(f"config.json: field {key!r} must be a positive integer, got {value!r}")
    return value


def _tied(arch: str, config: Mapping[str, Any]) -> bool:
    value = config.get("tie_word_embeddings")
    if value is None:  # transformers' class defaults
        return arch == "gemma3"
    return bool(value)


def is_moe_layer(config: Mapping[str, Any], layer: int) -> bool:
    """Whether decoder layer ``layer`` has routed experts (Qwen2/3-MoE can mix dense and sparse layers)."""
    arch = architecture_of(config)
    if arch == "mixtral":
        return True
    if arch not in _QWEN_MOE:
        return False
    step = config.get("decoder_sparse_step", 1) or 1
    return (
        layer not in (config.get("mlp_only_layers") or [])
        and int(config.get(_experts_key(config), 60)) > 0
        and (layer + 1) % step == 0
    )


def _experts_key(config: Mapping[str, Any]) -> str:
    """The config field holding the routed expert count (transformers 5 saves Qwen3-MoE's as num_local_experts)."""
    return "num_experts" if "num_experts" in config or "num_local_experts" not in config else "num_local_experts"


def expected_tensors(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape that ``save_pretrained`` writes for a model with this config.

    Respects ``tie_word_embeddings`` (no ``lm_head.weight`` when tied), ``head_dim``, grouped KV
    heads, Llama's ``attention_bias``/``mlp_bias``, Qwen2's q/k/v biases (Qwen2-MoE: ``qkv_bias``),
    Gemma 3's and Qwen3's q/k norms, Gemma 3's four norms per layer, Mixtral's per-expert ``w1/w2/w3`` and
    Qwen2-MoE's shared expert, ``mlp_only_layers`` and ``decoder_sparse_step``.

    Raises:
        CheckpointError: unsupported architecture, or a required field missing from the config.
    """
    arch = architecture_of(config)
    H = _field(config, "hidden_size")
    V = _field(config, "vocab_size")
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, H)}
    for i in range(_field(config, "num_hidden_layers")):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = (H,)
        out[f"{p}.post_attention_layernorm.weight"] = (H,)
        out.update(_attention_tensors(arch, config, f"{p}.self_attn", H))
        if arch == "gemma3":
            out[f"{p}.pre_feedforward_layernorm.weight"] = (H,)
            out[f"{p}.post_feedforward_layernorm.weight"] = (H,)
        out.update(_ffn_tensors(arch, config, p, i, H))
    out["model.norm.weight"] = (H,)
    if not _tied(arch, config):
        out["lm_head.weight"] = (V, H)
    return out


def _attention_tensors(arch: str, config: Mapping[str, Any], a: str, H: int) -> dict[str, tuple[int, ...]]:
    """One layer's attention projections (grouped KV heads, ``head_dim``), biases, Gemma 3's / Qwen3's q/k norms."""
    nh = _field(config, "num_attention_heads")
    nkv = config.get("num_key_value_heads") or nh
    hd = config.get("head_dim") or H // nh
    out: dict[str, tuple[int, ...]] = {
        f"{a}.q_proj.weight": (nh * hd, H),
        f"{a}.k_proj.weight": (nkv * hd, H),
        f"{a}.v_proj.weight": (nkv * hd, H),
        f"{a}.o_proj.weight": (H, nh * hd),
    }
    qkv_bias = {
        "llama": bool(config.get("attention_bias", False)),
        "gemma3": bool(config.get("attention_bias", False)),
        "qwen3": bool(config.get("attention_bias", False)),
        "qwen3_moe": bool(config.get("attention_bias", False)),
        "qwen2": True,
        "qwen2_moe": bool(config.get("qkv_bias", True)),
    }.get(arch, False)
    if qkv_bias:
        out[f"{a}.q_proj.bias"] = (nh * hd,)
        out[f"{a}.k_proj.bias"] = (nkv * hd,)
        out[f"{a}.v_proj.bias"] = (nkv * hd,)
    if arch in ("llama", "gemma3", "qwen3", "qwen3_moe") and bool(config.get("attention_bias", False)):
        out[f"{a}.o_proj.bias"] = (H,)
    if arch in _QK_NORM:
        out[f"{a}.q_norm.weight"] = (hd,)
        out[f"{a}.k_norm.weight"] = (hd,)
    return out


_HF_FFN = ("gate_proj", "up_proj", "down_proj")


def _ffn_tensors(arch: str, config: Mapping[str, Any], p: str, layer: int, H: int) -> dict[str, tuple[int, ...]]:
    """One layer's FFN: dense (Llama's ``mlp_bias``), Mixtral's experts, or Qwen2/3-MoE's (Qwen2: and shared expert)."""
    out: dict[str, tuple[int, ...]] = {}
    I = _field(config, "intermediate_size")  # noqa: E741 - the standard symbol
    if arch == "mixtral":
        E = _field(config, "num_local_experts")
        out[f"{p}.block_sparse_moe.gate.weight"] = (E, H)
        for e in range(E):
            out.update(_glu(f"{p}.block_sparse_moe.experts.{e}", H, I, ("w1", "w3", "w2")))
    elif arch in _QWEN_MOE and is_moe_layer(config, layer):
        E = _field(config, _experts_key(config))
        moe_i = _field(config, "moe_intermediate_size")
        out[f"{p}.mlp.gate.weight"] = (E, H)
        for e in range(E):
            out.update(_glu(f"{p}.mlp.experts.{e}", H, moe_i, _HF_FFN))
        shared_i = config.get("shared_expert_intermediate_size", 5632) if arch == "qwen2_moe" else 0
        if shared_i:
            out.update(_glu(f"{p}.mlp.shared_expert", H, shared_i, _HF_FFN))
            out[f"{p}.mlp.shared_expert_gate.weight"] = (1, H)
    else:
        out.update(_glu(f"{p}.mlp", H, I, _HF_FFN, bias=arch == "llama" and bool(config.get("mlp_bias", False))))
    return out


def _glu(
    prefix: str, H: int, inter: int, names: tuple[str, str, str], bias: bool = False
) -> dict[str, tuple[int, ...]]:
    """A gated FFN's three projections: gate and up (I, H), down (H, I), and their biases."""
    gate, up, down = names
    out: dict[str, tuple[int, ...]] = {
        f"{prefix}.{gate}.weight": (inter, H),
        f"{prefix}.{up}.weight": (inter, H),
        f"{prefix}.{down}.weight": (H, inter),
    }
    if bias:
        out |= {f"{prefix}.{gate}.bias": (inter,), f"{prefix}.{up}.bias": (inter,), f"{prefix}.{down}.bias": (H,)}
    return out


def inventory(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """Parameter counts by role and the FFN/expert layout, from tensor shapes.

    Args:
        config: the model's config.json dict.
        shapes: tensor name -> shape (e.g. ``reader.shapes()`` or :func:`expected_tensors`).

    Returns:
        A dict with one integer per role kind (``embedding attention ffn router shared_expert_gate
        norm head other``; ``head`` is 0 when embeddings are tied, a redundant ``lm_head`` being
        ignored), ``total`` (their sum, what ``model.num_parameters()`` reports), and per-layer lists
        ``ffn_neurons`` (all FFN hidden units, experts and shared expert included), ``experts``
        (routed experts, 0 for dense layers), ``expert_neurons`` (hidden units per routed expert),
        ``shared_expert_neurons``; plus ``arch``, ``layers``, ``tied_embeddings`` and
        ``experts_per_token`` (None for dense models).
    """
    arch = architecture_of(config)
    L = _field(config, "num_hidden_layers")
    tied = _tied(arch, config)
    counts = dict.fromkeys(ROLE_KINDS, 0)
    ffn_neurons = [0] * L
    experts: list[set[int]] = [set() for _ in range(L)]
    expert_neurons = [0] * L
    shared_neurons = [0] * L
    for name, shape in shapes.items():
        if IGNORABLE.match(name):
            continue
        role = tensor_role(arch, name)
        if role.kind == "head" and tied:
            continue
        numel = 1
        for d in shape:
            numel *= d
        counts[role.kind] += numel
        if role.kind != "ffn" or role.part != "weight" or role.layer is None or role.layer >= L:
            continue
        i = role.layer
        if role.proj == "gate":  # (I, H): one row per hidden unit
            ffn_neurons[i] += shape[0]
            if role.expert is not None:
                experts[i].add(role.expert)
                expert_neurons[i] = shape[0]
        elif role.proj == "shared_gate":
            ffn_neurons[i] += shape[0]
            shared_neurons[i] = shape[0]
        elif role.proj == "experts_gate_up":  # fused (E, 2I, H)
            ffn_neurons[i] += shape[0] * shape[1] // 2
            experts[i].update(range(shape[0]))
            expert_neurons[i] = shape[1] // 2
    result: dict[str, Any] = {"arch": arch, "layers": L, "tied_embeddings": tied, **counts}
    result["total"] = sum(counts.values())
    result["ffn_neurons"] = ffn_neurons
    result["experts"] = [len(s) for s in experts]
    result["expert_neurons"] = expert_neurons
    result["shared_expert_neurons"] = shared_neurons
    result["experts_per_token"] = config.get("num_experts_per_tok") if arch in MOE_ARCHS else None
    return result
