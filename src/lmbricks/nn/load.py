"""``load_model`` and ``save_model``: the reference LM to and from Hugging Face directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.nn.config import LMConfig
from lmbricks.nn.hf import (
    ARCHITECTURES,
    config_from_hf,
    config_to_hf,
    export_family,
    hf_state_dict,
    load_hf_weights,
)
from lmbricks.nn.model import LM

LOADER_GROUP = "lmbricks.loaders"


def section_loader(kind: str, path: Path) -> Any:
    """The loader registered for an ``lmbricks`` section ``kind`` (entry point group ``lmbricks.loaders``).

    Higher rooms register their directory kinds in ``pyproject.toml`` (``moefied`` ->
    ``lmbricks.moefy.io:load_moefied``), so this module never imports them. ConfigError names the kind
    when nothing is registered for it.
    """
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=LOADER_GROUP) if ep.name == kind]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=LOADER_GROUP))
        raise ConfigError(
            f"{path}/config.json: lmbricks section kind {kind!r} has no loader "
            f"(registered kinds: {', '.join(known) or 'none'}; entry point group {LOADER_GROUP!r})"
        )
    return found[0].load()


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a model directory as a dictionary (CheckpointError if absent or not JSON)."""
    f = Path(path) / "config.json"
    try:
        return dict(json.loads(f.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{f}: not found (not a Hugging Face model directory)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{f}: invalid JSON ({exc})") from None


def lm_config_of(hf: dict[str, Any]) -> LMConfig:
    """The LMConfig of a config.json dict: its ``lmbricks`` section when present, else translated."""
    section = hf.get("lmbricks")
    if isinstance(section, dict) and "config" in section:
        return LMConfig.from_dict(section["config"])
    return config_from_hf(hf)


def load_model(
    ref: str | Path,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    hf_fallback: bool = True,
    allow_pickle: bool | None = None,
) -> tuple[Any, Any]:
    """Load a model directory (or any ``lmbricks.hub`` reference) and its tokenizer.

    Llama, Mistral, Qwen2, Mixtral and Qwen2-MoE directories, and directories written by
    :func:`save_model` (with an ``lmbricks`` section in config.json), load as :class:`LM`. Other
    architectures load with ``transformers.AutoModelForCausalLM`` when ``hf_fallback`` is true.

    Args:
        ref: a Hugging Face directory, a ``.gguf`` file or a registry name.
        dtype: parameter dtype; None keeps the stored dtype.
        device: where the parameters live.
        hf_fallback: load unsupported architectures with transformers instead of raising.
        allow_pickle: read ``.bin`` pickles (weights only); None follows
            :func:`lmbricks.checkpoint.allow_pickles` (default: refuse).

    Returns:
        ``(model, tokenizer)`` in eval mode; tokenizer is None when the directory has none.
    """
    from lmbricks.hub import resolve_model

    path = resolve_model(ref)
    hf = read_config(path)
    section = hf.get("lmbricks")
    if isinstance(section, dict) and section.get("kind") not in (None, "lm"):
        # Other kinds (a MoEfied directory holds the permuted dense weights plus routers) have their own
        # loader: loading them as a plain LM would silently give the wrong model.
        return section_loader(str(section["kind"]), path)(path)  # type: ignore[no-any-return]
    if hf.get("model_type") not in ARCHITECTURES and "lmbricks" not in hf:
        if not hf_fallback:
            raise ConfigError(f"{path}: model_type {hf.get('model_type')!r} is not supported by lmbricks.nn")
        from transformers import AutoModelForCausalLM

        from lmbricks.checkpoint import verify_checkpoint
        from lmbricks.hub.hf_compat import quiet_loading

        verify_checkpoint(path, allow_pickle)
        with quiet_loading():
            hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", weights_only=True)
        hf_model = hf_model.to(torch.device(device)).eval()  # type: ignore[arg-type]
        return hf_model, _tokenizer(path)
    cfg = lm_config_of(hf)
    from lmbricks.checkpoint import CheckpointReader

    with torch.device("meta"):
        model = LM(cfg)
    model.to_empty(device=device)
    with CheckpointReader(path, allow_pickle=allow_pickle) as reader:
        stored = next((reader.info(k).dtype for k in reader), torch.float32)
        model.to(dtype or stored)
        load_hf_weights(model, reader.get, set(reader.keys()), str(hf.get("model_type")))
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval(), _tokenizer(path)


def save_model(
    model: LM,
    dest: str | Path,
    tokenizer: Any = None,
    force: bool = False,
    dtype: torch.dtype | None = None,
    max_shard_bytes: str | int = "2GB",
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a Hugging Face directory (atomically), in the family that expresses it.

    Dense models become Llama (Qwen2 with q/k/v biases, Mistral with a sliding window); softmax
    top-k MoE become Mixtral or Qwen2-MoE, loadable by ``from_pretrained``. Other configurations are
    written in the nearest layout with ``"transformers_exact": false`` in config.json's ``lmbricks``
    section; only :func:`load_model` reads those exactly.

    Args:
        model: the model to save.
        dest: output directory (must not exist unless ``force``).
        tokenizer: saved beside the weights when given.
        force: replace an existing ``dest``.
        dtype: storage dtype (default: the parameters' dtype).
        max_shard_bytes: largest safetensors shard.
        provenance: ``command`` and ``recipe`` for lmbricks.json (defaults describe a plain save).

    Returns:
        ``dest``.
    """
    from lmbricks.checkpoint import atomic_directory

    dest = Path(dest)
    with atomic_directory(dest, force=force) as tmp:
        write_model_dir(model, Path(tmp), tokenizer, dtype, max_shard_bytes, provenance)
    return dest


def write_model_dir(
    model: LM,
    directory: Path,
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: str | int = "2GB",
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write the files of :func:`save_model` into an existing (temporary) ``directory``."""
    from lmbricks.checkpoint import ShardedWriter, write_provenance

    family, _ = export_family(model.cfg)
    dtype = dtype or model.embed.weight.dtype
    writer = ShardedWriter(directory, max_shard_bytes=max_shard_bytes)
    for name, t in hf_state_dict(model, family).items():
        writer.add(name, t.to("cpu", dtype) if t.is_floating_point() else t.cpu())
    writer.finish()
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.cfg, family, dtype), indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    prov = provenance or {}
    write_provenance(
        directory,
        command=prov.get("command", "lmbricks.nn.save_model"),
        recipe=prov.get("recipe", {"family": family}),
        inputs=prov.get("inputs", {}),
    )


def _tokenizer(path: Path) -> Any:
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
