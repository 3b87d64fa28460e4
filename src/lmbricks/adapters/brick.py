"""A brick on disk: a PEFT LoRA adapter directory plus ``lmbricks.json``.

Layout (loadable by ``peft.PeftModel.from_pretrained``)::

    adapter_config.json        PEFT LoraConfig (rank, alpha, target modules, base model name)
    adapter_model.safetensors  lora_A (r, in) and lora_B (out, r) per adapted module
    lmbricks.json              provenance: command, config, base model hash, domain, measured effect

Inside lmbricks a brick's weights are handled as :class:`LoraPair` factors keyed by module path
(``model.layers.0.self_attn.q_proj``); the update of one module is ``scale * B @ A``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmbricks.checkpoint import PROVENANCE_FILE
from lmbricks.errors import CheckpointError, ConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_KEY_RE = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
if TYPE_CHECKING:
    from lmbricks.adapters.base import BaseModel

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoraPair:
    """One adapted module: ``delta W = scale * B @ A``.

    Attributes:
        A: (r, in_features).
        B: (out_features, r).
        scale: alpha / r (PEFT's ``scaling``).
    """

    A: torch.Tensor
    B: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    def delta(self) -> torch.Tensor:
        """The dense update, fp32, shape (out, in)."""
        return self.scale * (self.B.float() @ self.A.float())


@dataclass(frozen=True)
class BrickInfo:
    """What the catalogue and the commands need to know about a brick."""

    path: Path
    name: str
    rank: int
    alpha: float
    targets: tuple[str, ...]
    base_model: str | None = None
    base_sha256: str | None = None
    base_identity: dict[str, Any] | None = None
    domain: str | None = None
    effect: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-friendly row (for ``adapters list``)."""
        before, after = self.effect.get("ppl_before"), self.effect.get("ppl_after")
        change = (after / before - 1.0) if before and after else None
        return {
            "name": self.name,
            "domain": self.domain,
            "rank": self.rank,
            "targets": list(self.targets),
            "ppl_before": before,
            "ppl_after": after,
            "ppl_change": change,
            "base_model": self.base_model,
            "base_sha256": self.base_sha256,
            "path": str(self.path),
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_brick(path: str | Path) -> BrickInfo:
    """Read a brick directory's metadata (no weights).

    Args:
        path: a PEFT LoRA adapter directory, with or without ``lmbricks.json``.

    Returns:
        The brick's :class:`BrickInfo`.

    Raises:
        CheckpointError: the directory or its adapter files are missing or malformed.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a brick directory")
    config = _read_json(path / ADAPTER_CONFIG)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise CheckpointError(f"{path / ADAPTER_CONFIG}: peft_type {config.get('peft_type')!r} is not LORA")
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: missing")
    record = _read_json(path / PROVENANCE_FILE) if (path / PROVENANCE_FILE).is_file() else {}
    info = record.get("bricks", {}).get("adapter", {}) if isinstance(record.get("bricks"), dict) else {}
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return BrickInfo(
        path=path,
        name=str(info.get("name") or path.name),
        rank=int(config.get("r", 8)),
        alpha=float(config.get("lora_alpha", config.get("r", 8))),
        targets=tuple(sorted(targets)),
        base_model=info.get("base_model") or config.get("base_model_name_or_path"),
        base_sha256=info.get("base_sha256"),
        base_identity=info.get("base_identity"),
        domain=info.get("domain"),
        effect=dict(info.get("effect") or {}),
        record=record,
    )


def load_factors(path: str | Path) -> dict[str, LoraPair]:
    """Load a brick's LoRA factors in fp32.

    Args:
        path: brick directory.

    Returns:
        ``{module_path: LoraPair}`` sorted by module path.

    Raises:
        CheckpointError: a module has only one of its two factors, or the shapes disagree.
    """
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    info = read_brick(path)
    config = _read_json(path / ADAPTER_CONFIG)
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    if rank_pattern or alpha_pattern:
        raise CheckpointError(f"{path / ADAPTER_CONFIG}: rank_pattern / alpha_pattern are not supported")
    if config.get("use_rslora"):
        raise CheckpointError(f"{path / ADAPTER_CONFIG}: rsLoRA scaling is not supported")
    scale = info.alpha / info.rank
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(path / ADAPTER_WEIGHTS)).items():
        m = _KEY_RE.match(key)
        if m is None:
            raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: unexpected tensor {key!r} (not a LoRA factor)")
        halves.setdefault(m["module"], {})[m["which"]] = tensor.float()
    pairs: dict[str, LoraPair] = {}
    for module in sorted(halves):
        h = halves[module]
        if set(h) != {"A", "B"}:
            raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: {module} lacks lora_{'B' if 'A' in h else 'A'}")
        if h["A"].shape[0] != h["B"].shape[1]:
            raise CheckpointError(
                f"{path / ADAPTER_WEIGHTS}: {module}: lora_A {tuple(h['A'].shape)} and lora_B "
                f"{tuple(h['B'].shape)} disagree on the rank"
            )
        pairs[module] = LoraPair(A=h["A"], B=h["B"], scale=scale)
    if not pairs:
        raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: no LoRA factors")
    return pairs


def save_factors(
    out: Path,
    pairs: Mapping[str, LoraPair],
    *,
    base_model: str,
    dtype: str = "float32",
    full: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write factors as a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``).

    Every module must have the same rank; each pair's ``scale`` is folded into ``B`` so the saved
    adapter has ``lora_alpha == r`` (scale 1) and loads in PEFT unchanged.

    Args:
        out: an existing (temporary) directory.
        pairs: ``{module_path: LoraPair}``.
        base_model: written as ``base_model_name_or_path``.
        dtype: storage dtype (``float32``, ``float16`` or ``bfloat16``).
        full: ``{checkpoint key: tensor}`` saved whole as PEFT ``modules_to_save`` (embeddings, norms);
            such a brick loads in PEFT, while lmbricks' own factor loading refuses it (not a LoRA factor).
    """
    from safetensors.torch import save_file

    if not pairs:
        raise ConfigError("no LoRA factors to save")
    ranks = {p.rank for p in pairs.values()}
    if len(ranks) != 1:
        raise ConfigError(f"all modules must share one rank to save a PEFT adapter, got ranks {sorted(ranks)}")
    rank = ranks.pop()
    store = _DTYPES[dtype]
    tensors: dict[str, torch.Tensor] = {}
    for module, pair in pairs.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = pair.A.float().to(store).contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = (pair.B.float() * pair.scale).to(store).contiguous()
    for key, tensor in (full or {}).items():
        tensors[f"base_model.model.{key}"] = tensor.float().to(store).contiguous()
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    targets = sorted({m.rsplit(".", 1)[-1] for m in pairs})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
    }
    if full:
        config["modules_to_save"] = sorted({k.rsplit(".", 2)[-2] for k in full})
    with open(out / ADAPTER_CONFIG, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")


def brick_record(
    *,
    name: str,
    base_model: str,
    base_sha256: str,
    rank: int,
    base_identity: dict[str, Any] | None = None,
    alpha: float,
    targets: tuple[str, ...] | list[str],
    domain: str | None = None,
    effect: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``bricks`` section of ``lmbricks.json`` for an adapter brick."""
    return {
        "adapter": {
            "name": name,
            "domain": domain,
            "base_model": base_model,
            "base_sha256": base_sha256,
            "base_identity": base_identity,
            "rank": rank,
            "alpha": alpha,
            "targets": sorted(targets),
            "effect": effect or {},
            **extra,
        }
    }


def save_brick(
    out: Path,
    pairs: Mapping[str, LoraPair],
    base: BaseModel,
    *,
    record: dict[str, Any],
    command: str,
    recipe: dict[str, Any],
    inputs: Mapping[str, Path],
    force: bool = False,
    dtype: str = "float32",
) -> None:
    """Write ``pairs`` atomically as a brick directory: the PEFT adapter plus ``lmbricks.json``.

    Args:
        out: the brick directory (guarded against every path of ``inputs``; replaced only with ``force``).
        pairs: ``{module_path: LoraPair}`` of one rank.
        base: the base model the brick belongs to (its name goes into ``adapter_config.json``).
        record: the ``bricks`` section (see :func:`pairs_record`).
        command, recipe, inputs: the provenance (``inputs`` by label, hashed into ``lmbricks.json``).
        force: replace an existing ``out`` that lmbricks wrote.
        dtype: storage dtype of the factors.
    """
    from lmbricks.checkpoint import atomic_directory, write_provenance

    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        save_factors(tmp, pairs, base_model=base.name, dtype=dtype)
        write_provenance(tmp, command=command, recipe=recipe, inputs=inputs, bricks=record)


def pairs_record(
    pairs: Mapping[str, LoraPair], base: BaseModel, *, name: str, rank: int, alpha: float, **fields: Any
) -> dict[str, Any]:
    """:func:`brick_record` of ``pairs`` on ``base`` (targets: the module names the pairs adapt)."""
    return brick_record(
        name=name,
        base_model=base.name,
        base_sha256=base.sha256,
        base_identity=base.identity,
        rank=rank,
        alpha=alpha,
        targets=sorted({m.rsplit(".", 1)[-1] for m in pairs}),
        **fields,
    )
