"""Save, load and densify MoEfied models.

Directory layout (what Hugging Face cannot express is in lmbricks' own files):

* ``config.json``: the source model's config plus an ``lmbricks`` section
  ``{"kind": "moefied", "experts": E, "shared_experts": S, "top_k": K, "router": ..., "moefy": {the MoefyConfig}}``
  (the S shared experts are experts ``0 .. S-1``; their neurons are the first ``S n`` of ``perm``);
* ``model.safetensors`` (or shards): the source model's tensors with every FFN's gate rows, up rows
  and down columns in expert order. ``transformers`` loads this as the dense model (the reordering
  leaves the function unchanged); :func:`load_moefied` loads it as a MoEfied model;
* ``moefy.safetensors``: ``layers.{i}.perm`` (the neuron order) and ``layers.{i}.router.*``;
* tokenizer files and ``lmbricks.json`` (provenance).

:func:`densify` undoes the reordering (pure indexing), giving back the source weights bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.analysis.ffn import find_ffns
from lmbricks.checkpoint import (
    CheckpointReader,
    ShardedWriter,
    atomic_directory,
    check_output,
    copy_tokenizer,
    write_provenance,
)
from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.hub.hf_compat import quiet_loading
from lmbricks.hub.threshold import FATReLU, restore_threshold
from lmbricks.moefy.config import MoefyConfig
from lmbricks.moefy.convert import _parent, moefied_layers
from lmbricks.moefy.routers import MOEFY_ROUTERS
from lmbricks.moefy.runtime import MoefiedFFN

ROUTER_FILE = "moefy.safetensors"
SECTION = "lmbricks"
KIND = "moefied"


def _names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, MoefiedFFN)]


def dense_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's tensors in Hugging Face layout, MoEfied FFNs as gate/up/down in expert order."""
    names = _names(model)
    out: dict[str, Tensor] = {}
    skip = tuple(f"{n}." for n in names)
    for key, value in model.state_dict().items():
        if not key.startswith(skip):
            out[key] = value
    for name in names:
        gate, up, down = model.get_submodule(name).dense_weights()  # type: ignore[operator]
        out[f"{name}.gate_proj.weight"] = gate.detach().contiguous()
        out[f"{name}.up_proj.weight"] = up.detach().contiguous()
        out[f"{name}.down_proj.weight"] = down.detach().contiguous()
    config: Any = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)
    return out


def save_moefied(
    model: nn.Module,
    out: str | Path,
    config: MoefyConfig,
    permutations: list[Tensor],
    source: str | Path | None = None,
    tokenizer: Any = None,
    force: bool = False,
    command: str = "lmbricks.moefy.save_moefied",
) -> Path:
    """Write a MoEfied model directory (see the module docstring), atomically.

    Args:
        model: the MoEfied model (after :func:`lmbricks.moefy.moefy_model`).
        out: destination directory.
        config: the MoEfication settings (stored in config.json).
        permutations: the per-layer neuron orders (for :func:`densify`).
        source: the source model directory (tokenizer files and provenance hash).
        tokenizer: saved instead when ``source`` has no tokenizer files.
        force: replace an existing ``out``.
        command: recorded in lmbricks.json.

    Returns:
        ``out`` as an absolute path.
    """
    layers = moefied_layers(model)
    if not layers:
        raise CheckpointError("save_moefied: the model has no MoEfied FFN")
    model_config: Any = getattr(model, "config", None)
    if model_config is None:
        raise CheckpointError("save_moefied: the model has no Hugging Face config")
    hf: dict[str, Any] = {**model_config.to_dict(), SECTION: _section(model, layers, config)}
    with atomic_directory(out, force=force, inputs=[source]) as tmp:
        writer = ShardedWriter(tmp)
        for key, value in dense_state_dict(model).items():
            writer.add(key, value)
        writer.finish()
        from safetensors.torch import save_file

        save_file(_router_tensors(layers, permutations), str(tmp / ROUTER_FILE), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True, default=str) + "\n")
        copied = copy_tokenizer(Path(source), tmp) if source is not None and Path(source).is_dir() else []
        if not any(c.startswith("tokenizer") for c in copied) and tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_provenance(
            tmp,
            command=command,
            recipe=config.model_dump(),
            inputs={"model": source} if source is not None and Path(source).exists() else {},
            bricks={"experts_per_layer": layers[0].num_experts, "layers": len(layers), "router": config.router},
        )
    return Path(out).expanduser().absolute()


def _section(model: nn.Module, layers: list[MoefiedFFN], config: MoefyConfig) -> dict[str, Any]:
    """config.json's ``lmbricks`` section: kind, experts, routing defaults, layer names, the settings."""
    return {
        "kind": KIND,
        "experts": layers[0].num_experts,
        "expert_size": layers[0].expert_size,
        "shared_experts": layers[0].shared_experts,
        "top_k": layers[0].top_k,
        "router": config.router,
        "dynamic_threshold": layers[0].dynamic_threshold,
        # a ReLU-fied source's FATReLU T (0: none): from_pretrained alone would compute plain relu
        "activation_threshold": float(layers[0].act.threshold) if isinstance(layers[0].act, FATReLU) else 0.0,
        "layers": _names(model),
        "moefy": config.model_dump(),
    }


def _router_tensors(layers: list[MoefiedFFN], permutations: list[Tensor]) -> dict[str, Tensor]:
    """``layers.{i}.perm`` (the neuron order, int64) and ``layers.{i}.router.*`` (fp32) of every layer."""
    extra: dict[str, Tensor] = {}
    for i, (layer, perm) in enumerate(zip(layers, permutations, strict=True)):
        extra[f"layers.{i}.perm"] = perm.to(torch.int64)
        if layer.router is not None:
            for k, v in layer.router.state_dict().items():
                extra[f"layers.{i}.router.{k}"] = v.detach().float().contiguous()
    return extra


def read_section(path: str | Path) -> dict[str, Any]:
    """The ``lmbricks`` section of a MoEfied directory's config.json (CheckpointError if absent)."""
    f = Path(path) / "config.json"
    try:
        hf = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{f}: cannot read ({exc})") from None
    section = hf.get(SECTION)
    if not isinstance(section, dict) or section.get("kind") != KIND:
        raise CheckpointError(f"{f}: not a MoEfied model (no lmbricks section with kind 'moefied')")
    return section


def is_moefied(path: str | Path) -> bool:
    """Whether ``path`` is a MoEfied model directory."""
    try:
        read_section(path)
    except CheckpointError:
        return False
    return True


def load_moefied(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """Load a MoEfied directory as a model with :class:`MoefiedFFN` blocks (eval mode) and its tokenizer.

    Args:
        path: the directory written by :func:`save_moefied`.
        dtype: parameter dtype.

    Returns:
        ``(model, tokenizer)``; tokenizer is None if the directory has none.
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    section = read_section(path)
    MoefyConfig(**section["moefy"])  # validates the stored settings
    kind = MOEFY_ROUTERS.get(section["router"])
    if kind is None:
        raise CheckpointError(f"{path}: unknown router {section['router']!r} (known: {', '.join(MOEFY_ROUTERS)})")
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    restore_threshold(model, float(section.get("activation_threshold") or 0.0))  # before the FFNs are read
    extra = load_file(str(path / ROUTER_FILE))
    blocks = find_ffns(model)
    if len(blocks) != len(section["layers"]):
        raise CheckpointError(f"{path}: {len(section['layers'])} MoEfied layers declared, {len(blocks)} FFNs found")
    for i, block in enumerate(blocks):
        assert block.gate is not None
        experts = int(section["experts"])
        shared = int(section.get("shared_experts") or 0)  # absent in directories written before shared experts
        prefix = f"layers.{i}.router."
        state = {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}
        router = kind.from_state(state, block.hidden, experts - shared)
        ffn = MoefiedFFN.from_dense(
            block.gate.weight.detach(),
            block.up.weight.detach(),
            block.down.weight.detach(),
            experts,
            block.act,
            router,
            int(section["top_k"]),
            section.get("dynamic_threshold"),
            shared,
        )
        parent, attr = _parent(model, block.name)
        setattr(parent, attr, ffn.to(dtype))
    tokenizer = None
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def densify(src: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the dense model of a MoEfied directory: neurons back in their original order.

    For an unhealed MoEfied model the result equals the source dense model bit for bit (the
    conversion and this inverse are pure reindexing). The ``lmbricks`` section and the router file
    are dropped; the result is a plain Hugging Face directory.

    Args:
        src: a MoEfied directory.
        out: destination.
        force: replace an existing ``out``.

    Returns:
        ``out`` as an absolute path.
    """
    from safetensors.torch import load_file

    src = Path(src)
    check_output(out, [src], force)  # before reading any tensor
    section = read_section(src)
    extra = load_file(str(src / ROUTER_FILE))
    inverse = {name: torch.argsort(extra[f"layers.{i}.perm"]) for i, name in enumerate(section["layers"])}
    hf = json.loads((src / "config.json").read_text())
    hf.pop(SECTION, None)
    threshold = float(section.get("activation_threshold") or 0.0)
    if threshold > 0:
        hf[SECTION] = fatrelu_section(hf, threshold, where=str(src / "config.json"))
    with atomic_directory(out, force=force, inputs=[src]) as tmp, CheckpointReader(src) as reader:
        writer = ShardedWriter(tmp)
        names = list(reader.keys())
        for key in names:
            tensor = reader.get(key)
            prefix, _, proj = key.rpartition(".")[0].rpartition(".")
            if prefix in inverse and proj in ("gate_proj", "up_proj"):
                tensor = tensor[inverse[prefix]]
            elif prefix in inverse and proj == "down_proj":
                tensor = tensor[:, inverse[prefix]]
            writer.add(key, tensor)
        writer.finish()
        (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
        copy_tokenizer(src, tmp)
        write_provenance(tmp, command="lmbricks moefy --densify", recipe=None, inputs={"moefied": src})
    return Path(out).expanduser().absolute()


def fatrelu_section(hf: dict[str, Any], threshold: float, where: str = "config.json") -> dict[str, Any]:
    """The ``lmbricks`` section of a dense FATReLU model: its LMConfig with ``activation: fatrelu`` and T.

    The layout :func:`lmbricks.nn.hf.config_to_hf` writes (what ``lmbricks sparsify relufy``
    saves), read back by :func:`lmbricks.hub.threshold.activation_threshold` and
    :func:`lmbricks.nn.load.lm_config_of`.

    Args:
        hf: the dense model's config.json dictionary (``hidden_act: relu``, no ``lmbricks`` section).
        threshold: FATReLU's T (> 0).
        where: the file named in errors.

    Returns:
        ``{"config": LMConfig dict, "transformers_exact": False, "inexact_because": ...}``.
    """
    from lmbricks.nn.config import LMConfig
    from lmbricks.nn.hf import config_from_hf, export_family

    try:
        fields = {**config_from_hf(hf).to_dict(), "activation": "fatrelu", "activation_threshold": threshold}
        cfg = LMConfig.from_dict(fields)
    except (ConfigError, ValueError) as exc:
        why = f"cannot record the FATReLU threshold {threshold} for this architecture ({exc})"
        raise CheckpointError(f"{where}: {why}") from None
    _, reason = export_family(cfg)
    return {"config": cfg.to_dict(), "transformers_exact": reason is None, "inexact_because": reason}
