"""Where an expert's weights come from: a fine-tune of the base, or the base with a LoRA brick merged in.

An :class:`ExpertSource` is opened (headers, config and adapter checked against the base, no tensor
read) before anything is written, so a recipe with an expert of another base fails early. Reading
an expert's FFN for one layer is then lazy: ``source.ffn(i)`` reads three matrices (the brick's
``s * B @ A`` added on the fly by :class:`lmbricks.merge.inputs.ModelInput`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import ConfigError, LmbricksError
from lmbricks.merge.inputs import ModelInput, open_input, split_reference

#: config.json fields that must agree between the base and every expert source.
SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
#: Dense families whose FFN is ``model.layers.{i}.mlp.{gate,up,down}_proj`` and that lmbricks.nn computes.
DENSE_FAMILIES = ("llama", "mistral", "qwen2")
#: Every dense family an expert or a base may be (Qwen3 assembles into Qwen3-MoE by tensor name).
EXPERT_FAMILIES = (*DENSE_FAMILIES, "qwen3")


@dataclass
class ExpertFFN:
    """One SwiGLU FFN in nn.Linear layout, fp32: gate and up (I, H), down (H, I)."""

    gate: Tensor
    up: Tensor
    down: Tensor

    def scaled(self, residual_scale: float | None) -> ExpertFFN:
        """The FFN with its output multiplied by ``residual_scale`` (mergekit's option: scales down)."""
        if residual_scale is None or residual_scale == 1.0:
            return self
        return ExpertFFN(self.gate, self.up, self.down * residual_scale)

    def noisy(self, std: float | None, generator: torch.Generator) -> ExpertFFN:
        """The FFN plus N(0, std^2) noise on every weight (mergekit's ``noise_scale``, absolute)."""
        if not std:
            return self
        return ExpertFFN(
            *(w + std * torch.randn(w.shape, generator=generator) for w in (self.gate, self.up, self.down))
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(intermediate I, hidden H)."""
        i, h = self.gate.shape
        return int(i), int(h)


def side_by_side(ffns: list[ExpertFFN]) -> ExpertFFN:
    """Several SwiGLU FFNs of one width as one wider FFN computing their sum (DeepSeek's shared experts).

    A SwiGLU is a sum over its neurons, so stacking the gate and up rows (I, H) -> (S I, H) and the down
    columns (H, I) -> (H, S I) gives ``sum_s F_s(x)``.
    """
    if not ffns:
        raise ValueError("side_by_side needs at least one FFN")
    if len(ffns) == 1:
        return ffns[0]
    return ExpertFFN(
        torch.cat([f.gate for f in ffns]), torch.cat([f.up for f in ffns]), torch.cat([f.down for f in ffns], dim=1)
    )


def ffn_names(layer: int) -> tuple[str, str, str]:
    """HF names of the dense FFN of ``layer``: gate, up, down."""
    p = f"model.layers.{layer}.mlp."
    return p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"


@dataclass
class ExpertSource:
    """An opened expert source.

    Attributes:
        label: as written in the recipe (the brick reference, or the model reference).
        kind: ``model`` (a fine-tune, possibly ``path+lora``) or ``brick`` (base + brick).
        input: the lazy reader (with the LoRA applied on the fly, if any).
        brick_path: the brick directory for ``kind == "brick"``.
    """

    label: str
    kind: str
    input: ModelInput
    brick_path: Path | None = None

    @property
    def path(self) -> Path:
        return self.input.path

    def read(self, name: str) -> Tensor:
        """An HF-named tensor in fp32 (LoRA delta included), never a view of the file (it outlives the reader)."""
        t = self.input.read(name)
        adapter = self.input.adapter
        if adapter is not None and name in adapter.targets and t.dtype == torch.float32:
            return t  # W + s B A was computed into a fresh fp32 tensor
        return t.to(torch.float32, copy=True)

    def ffn(self, layer: int) -> ExpertFFN:
        """The FFN of ``layer`` in fp32."""
        g, u, d = ffn_names(layer)
        return ExpertFFN(self.read(g), self.read(u), self.read(d))

    def describe(self, out: str | Path) -> dict[str, str | None]:
        """The inventory entry of lmbricks.json, naming paths as :func:`reference_name` does for ``out``."""
        from lmbricks.checkpoint.provenance import reference_name

        def ref(path: Path | None) -> str | None:
            return None if path is None else reference_name(path, out)

        adapter = None if self.input.adapter is None else self.input.adapter.path
        return {
            "kind": self.kind,
            "source": ref(self.input.path),
            "brick": ref(self.brick_path),
            "adapter": ref(adapter),
        }

    def close(self) -> None:
        self.input.reader.close()


def check_compatible(base: dict, other: dict, where: str, label: str, base_label: str) -> None:
    """Refuse an expert source whose shape or architecture differs from the base's.

    Raises:
        ConfigError: naming the field, e.g. ``experts[1].source_model: ... hidden_size 64, base 32``.
    """
    for key in SHAPE_KEYS:
        if key not in base:
            continue  # e.g. checking against an MoE's shape, whose model_type is not a dense one
        a, b = other.get(key), base.get(key)
        if key == "num_key_value_heads":
            a = a or other.get("num_attention_heads")
            b = b or base.get("num_attention_heads")
        if a != b:
            raise ConfigError(
                f"{where}: {label} has {key}={a!r} but base_model {base_label} has {b!r} "
                "(experts must be fine-tunes of the base model)"
            )


def open_model_source(ref: str, base_config: dict, base_label: str, where: str) -> ExpertSource:
    """Open a fine-tune (directory, registry name or ``path+lora``) and check it against the base.

    Raises:
        ConfigError / CheckpointError: naming ``where`` (the recipe field) and the problem.
    """
    try:
        inp = open_input(ref)
    except LmbricksError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    if inp.arch not in EXPERT_FAMILIES:
        inp.reader.close()
        raise ConfigError(
            f"{where}: {ref} is a {inp.arch} model; experts come from dense {', '.join(EXPERT_FAMILIES)} models"
        )
    check_compatible(base_config, inp.config, where, ref, base_label)
    return ExpertSource(label=ref, kind="model", input=inp)


def open_brick_source(ref: str, base_ref: str, base_path: Path, where: str) -> ExpertSource:
    """Open ``base + brick``: the brick must have been trained on this base (hash) and fit its shapes.

    Args:
        ref: a brick directory or a catalogue name of the base (``zh``, ``smollm2-zh``).
        base_ref: the base reference as given (for the catalogue lookup).
        base_path: the base model directory.
        where: the recipe field, for messages.

    Raises:
        ConfigError / UnknownNameError / CheckpointError: naming ``where``.
    """
    from lmbricks.adapters.base import base_model, check_brick_base
    from lmbricks.adapters.brick import read_brick
    from lmbricks.adapters.catalogue import find_brick

    try:
        path = find_brick(ref, base_ref)
        info = read_brick(path)
        check_brick_base(info.name, info.base_sha256, info.base_model, base_model(base_path), info.base_identity)
        inp = open_input(f"{base_path}+{path}")
    except LmbricksError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return ExpertSource(label=ref, kind="brick", input=inp, brick_path=path)


def open_source(
    *, source_model: str | None, brick: str | None, base_ref: str, base_path: Path, base_config: dict, where: str
) -> ExpertSource:
    """Open whichever of ``source_model`` / ``brick`` is given (exactly one)."""
    if brick is not None:
        return open_brick_source(brick, base_ref, base_path, f"{where}.brick")
    if source_model is None:
        raise ConfigError(f"{where}: give exactly one of source_model or brick")
    return open_model_source(source_model, base_config, str(base_ref), f"{where}.source_model")


def guess_source(ref: str, base_ref: str, base_path: Path, base_config: dict, where: str) -> ExpertSource:
    """Open a reference that is either a model (directory, registry name, ``path+lora``) or a brick.

    A directory with ``adapter_config.json`` (or a catalogue name) is a brick merged into the base; a
    directory with ``config.json``, a registry name or ``path+lora`` is a fine-tune.
    """
    model_part, adapter = split_reference(ref)
    p = Path(model_part).expanduser()
    if adapter is None and (p / "adapter_config.json").is_file():
        return open_brick_source(ref, base_ref, base_path, where)
    if adapter is not None or (p / "config.json").is_file():
        return open_model_source(ref, base_config, str(base_ref), where)
    from lmbricks.hub import REGISTRY

    if ref in REGISTRY:
        return open_model_source(ref, base_config, str(base_ref), where)
    return open_brick_source(ref, base_ref, base_path, where)


def load_lm(ref: str) -> tuple[Any, Any]:
    """Load a dense model reference as an :class:`lmbricks.nn.LM` in fp32, ``path+lora`` included.

    The LoRA update is added to each targeted weight in fp32 as it is read (nothing is written), so a
    brick can be evaluated, merged or compared without saving ``base + brick`` first.

    Args:
        ref: a model directory or registry name, optionally ``+`` a PEFT LoRA directory.

    Returns:
        ``(model, tokenizer)`` in eval mode.
    """
    from transformers import AutoTokenizer

    from lmbricks.checkpoint import TOKENIZER_FILES
    from lmbricks.nn.hf import config_from_hf, load_hf_weights
    from lmbricks.nn.model import LM

    inp = open_input(ref)
    try:
        cfg = config_from_hf(inp.config)
        with torch.device("meta"):
            model = LM(cfg)
        model.to_empty(device="cpu")
        load_hf_weights(model, inp.read, set(inp.reader.keys()), str(inp.config["model_type"]))
    finally:
        inp.reader.close()
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    has_tokenizer = any((inp.path / f).is_file() for f in TOKENIZER_FILES if f.startswith("tokenizer"))
    return model.eval(), AutoTokenizer.from_pretrained(inp.path) if has_tokenizer else None
