"""Input models of a merge: a directory (or registry name), optionally ``+`` a PEFT LoRA directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmbricks.checkpoint import CheckpointReader, architecture_of, validate_checkpoint
from lmbricks.checkpoint.provenance import check_recorded_base, read_record
from lmbricks.errors import CheckpointError, ConfigError, LmbricksError
from lmbricks.merge.lora import LoraAdapter


@dataclass
class ModelInput:
    """One opened input: headers and config read and validated, no tensor data read.

    Attributes:
        key: the reference as written in the recipe (used in messages and parameters).
        path: the model directory.
        adapter: the LoRA applied on the fly, if the reference was ``path+adapter``.
        reader: lazy reader of the weights.
        arch: lmbricks architecture name (``llama``...).
    """

    key: str
    path: Path
    adapter: LoraAdapter | None
    reader: CheckpointReader
    arch: str

    @property
    def config(self) -> dict:
        return self.reader.config

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def shape(self, name: str) -> tuple[int, ...]:
        return self.reader.info(name).shape

    def read(self, name: str) -> torch.Tensor:
        """The tensor: a view of the memory-mapped file, or fp32 ``W + s·B@A`` if the adapter targets it."""
        t = self.reader.get(name)
        if self.adapter is not None:
            delta = self.adapter.delta(name)
            if delta is not None:
                return delta.add_(t)
        return t

    def byte_range(self, name: str) -> tuple[Path, int, int]:
        """File and absolute byte range holding ``name`` (for read-ahead)."""
        info = self.reader.info(name)
        return self.reader.file_of(name), info.start, info.end


def split_reference(ref: str) -> tuple[str, str | None]:
    """``"path+adapter"`` -> ``("path", "adapter")``; ``"path"`` -> ``("path", None)``."""
    if "+" in ref:
        model, adapter = ref.rsplit("+", 1)
        return model, adapter
    return ref, None


def _resolve_dir(ref: str) -> Path:
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    if not p.exists():
        from lmbricks.hub import REGISTRY, resolve_model

        if ref in REGISTRY:
            return resolve_model(ref)
        raise ConfigError(f"model {ref!r}: no such directory (and not a registry name)")
    raise ConfigError(f"model {ref!r}: is a file, expected a Hugging Face model directory")


def open_input(ref: str, allow_pickle: bool | None = None) -> ModelInput:
    """Open and validate one input: config, shard index, headers, names and shapes per the architecture.

    ``allow_pickle``: read ``.bin`` pickles (weights only); None follows
    :func:`lmbricks.checkpoint.allow_pickles` (default: refuse).

    Raises:
        ConfigError / CheckpointError: naming the model (and the tensor or file at fault).
    """
    model_ref, adapter_ref = split_reference(ref)
    path = _resolve_dir(model_ref)
    try:
        reader = CheckpointReader(path, allow_pickle=allow_pickle)
        arch = architecture_of(reader.config)
        validate_checkpoint(reader)
    except LmbricksError as exc:
        raise type(exc)(f"model {model_ref}: {exc}") from None
    adapter = None
    if adapter_ref is not None:
        adapter_dir = Path(adapter_ref).expanduser()
        if not adapter_dir.is_dir():
            raise ConfigError(f"model {ref!r}: adapter directory {adapter_ref!r} not found")
        adapter = LoraAdapter(adapter_dir)
        # The same rule as every brick command: an adapter that records its base must meet that base.
        recorded = (read_record(adapter_dir).get("bricks") or {}).get("adapter") or {}
        check_recorded_base(
            f"adapter {adapter_ref!r}",
            recorded.get("base_sha256"),
            recorded.get("base_identity"),
            recorded.get("base_model"),
            path,
            model_ref,
        )
        adapter.check_against(reader.shapes(), model_ref)
    if not reader.keys():
        raise CheckpointError(f"model {model_ref}: no tensors")
    return ModelInput(ref, path, adapter, reader, arch)
