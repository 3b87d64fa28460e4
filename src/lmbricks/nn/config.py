"""The reference LM's configuration: one flat dataclass, validated by pydantic on construction.

Every field says *why* it exists. ``LMConfig.from_dict`` accepts the same dictionary that
``to_dict`` writes (it is what goes into the ``lmbricks`` section of config.json and into training
YAML files), and any bad value raises :class:`~lmbricks.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from lmbricks.config import format_errors, suggest
from lmbricks.errors import ConfigError

if TYPE_CHECKING:
    from lmbricks.moe import MoEConfig

PositiveInt = Annotated[int, Field(gt=0, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0)]

#: The Hugging Face families lmbricks.nn reads and writes: model_type -> architecture class.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
}

#: The dense FFN's activations, ``down(act(gate) * up)``: act(g) for each name.
DENSE_ACTIVATIONS = {
    "swiglu": "silu(g)",
    "reglu": "relu(g)",
    "relu2": "relu(g) ** 2 (the squared-ReLU GLU of 'ReLU^2 Wins')",
    "fatrelu": "g where g > activation_threshold, else 0 (FATReLU; threshold 0 is reglu)",
}


@dataclass(config=ConfigDict(extra="forbid"))
class _Fields:
    """The fields of :class:`LMConfig`, typed and range-checked by pydantic (a dataclass all the same)."""

    vocab_size: PositiveInt
    hidden_size: PositiveInt
    num_layers: PositiveInt
    num_heads: PositiveInt
    # None: = num_heads (plain multi-head attention); fewer = GQA
    num_kv_heads: PositiveInt | None = None
    # None: hidden_size // num_heads (Llama); Qwen/Gemma may differ
    head_dim: PositiveInt | None = None
    intermediate_size: Annotated[int, Field(ge=0, strict=True)] = (
        0  # dense SwiGLU width; 0: 8/3 * hidden rounded up to 64
    )
    max_position_embeddings: PositiveInt = 2048  # only recorded for export; RoPE works at any length
    rope_theta: PositiveFloat = 10000.0  # RoPE base: larger = slower rotation = longer usable context
    rms_norm_eps: PositiveFloat = 1e-5
    qkv_bias: bool = False  # Qwen2 puts biases on q/k/v (not on o)
    # Mistral: each query sees only the last `sliding_window` keys
    sliding_window: PositiveInt | None = None
    tie_embeddings: bool = False  # lm_head shares the embedding matrix (saves V*H parameters)
    # dense FFN activation (see DENSE_ACTIVATIONS); MoE experts name theirs in `moe`
    activation: str = "swiglu"
    # FATReLU's T: the gate passes only where it exceeds T (>= 0; non-zero only with "fatrelu")
    activation_threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    init_std: float = 0.02  # std of the normal init of every matrix (residual outputs are scaled down)
    # MoE: `moe` holds the keyword arguments of lmbricks.moe.MoEConfig (hidden_size is filled in).
    moe: dict[str, Any] | None = None
    # as Qwen2-MoE's decoder_sparse_step: layer i is MoE iff (i + 1) % moe_every == 0
    moe_every: PositiveInt = 1
    dense_layers: tuple[int, ...] = ()  # as Qwen2-MoE's mlp_only_layers: forced dense
    family: str | None = None  # HF architecture (a key of ARCHITECTURES) this config came from / exports to
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # untouched HF config keys kept for export


class LMConfig(_Fields):
    """Shape and options of a decoder-only LM (pre-norm, RMSNorm, RoPE, GQA, SwiGLU).

    The feed-forward block of each layer is a dense gated FFN (``activation``: SwiGLU by default,
    ReGLU, squared-ReLU GLU or FATReLU GLU), or an MoE layer from ``lmbricks.moe``
    when ``moe`` is set and the layer is selected by ``moe_every`` / ``dense_layers``. Built by
    keyword; a wrong type or value raises one ConfigError naming the field (the format of
    :mod:`lmbricks.config`), and the fields' consistency is checked after them.
    """

    def __init__(self, **fields: Any) -> None:
        known = {f.name for f in dataclasses.fields(_Fields)}
        unknown = sorted(set(fields) - known, key=str)
        if unknown:
            raise ConfigError(f"unknown model config key {unknown[0]!r}{suggest(str(unknown[0]), known)}")
        missing = [n for n in ("vocab_size", "hidden_size", "num_layers", "num_heads") if n not in fields]
        if missing:
            raise ConfigError(f"model config is missing field(s): {', '.join(missing)}")
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, _Fields, fields)) from None
        self._complete()

    def _complete(self) -> None:
        """Fill the derived defaults (kv heads, head_dim, FFN width, moe shape) and check consistency."""
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
                    "set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_heads
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.intermediate_size == 0:
            self.intermediate_size = -(-8 * self.hidden_size // 3 // 64) * 64
        for i in self.dense_layers:
            if not 0 <= i < self.num_layers:
                raise ConfigError(f"dense_layers contains {i}, outside 0..{self.num_layers - 1}")
        if self.activation not in DENSE_ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {', '.join(DENSE_ACTIVATIONS)}, got {self.activation!r}"
                f"{suggest(self.activation, set(DENSE_ACTIVATIONS))}"
            )
        if self.activation_threshold and self.activation != "fatrelu":
            raise ConfigError(
                f"activation_threshold ({self.activation_threshold}) is only used with activation 'fatrelu', "
                f"not {self.activation!r}"
            )
        if self.family is not None and self.family not in ARCHITECTURES:
            raise ConfigError(f"family must be one of {', '.join(ARCHITECTURES)}, got {self.family!r}")
        if self.moe is not None:
            hs = self.moe.setdefault("hidden_size", self.hidden_size)
            if hs != self.hidden_size:
                raise ConfigError(f"moe.hidden_size ({hs}) differs from hidden_size ({self.hidden_size})")
            self.moe.setdefault("intermediate_size", self.intermediate_size)
            self.moe_config()  # validate now, naming the field, before any weight is allocated

    # ------------------------------------------------------------------ helpers
    def is_moe_layer(self, i: int) -> bool:
        """Whether layer ``i`` uses the MoE feed-forward block (Qwen2-MoE's rule)."""
        return self.moe is not None and (i + 1) % self.moe_every == 0 and i not in self.dense_layers

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    def moe_config(self) -> MoEConfig:
        """The ``lmbricks.moe.MoEConfig`` for the MoE layers (ConfigError naming ``moe.<field>``)."""
        if self.moe is None:
            raise ConfigError("this model has no moe section")
        from lmbricks.moe import MoEConfig

        known = set(MoEConfig.model_fields)
        for key in self.moe:
            if key not in known:
                raise ConfigError(f"unknown key 'moe.{key}'{suggest(str(key), known)}")
        try:
            return MoEConfig(**self.moe)
        except ConfigError as exc:
            raise ConfigError(f"moe: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable dictionary that :meth:`from_dict` reads back."""
        d = dataclasses.asdict(self)
        d["dense_layers"] = list(self.dense_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        """Build from a dictionary (what :meth:`to_dict` writes); unknown keys raise ConfigError naming them."""
        if not isinstance(d, dict):
            raise ConfigError(f"model config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        if d.get("moe") is not None:
            d["moe"] = dict(d["moe"])
        return cls(**d)
