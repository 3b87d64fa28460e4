"""PEFT LoRA adapters applied on the fly: ``W' = W + s · B @ A`` when a target tensor is read.

Reads ``adapter_config.json`` and ``adapter_model.safetensors`` (header first); no merged copy of
the model is ever written. Keys look like ``base_model.model.<module>.lora_A.weight`` (A: (r, in))
and ``...lora_B.weight`` (B: (out, r)); the scale is ``lora_alpha / r`` (``/ sqrt(r)`` with
``use_rslora``), with ``alpha_pattern`` overrides.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lmbricks.checkpoint import SafetensorsFile
from lmbricks.errors import CheckpointError

_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class _Pair:
    a: str
    b: str
    scale: float


class LoraAdapter:
    """A PEFT LoRA directory, opened lazily.

    Args:
        path: directory with ``adapter_config.json`` and ``adapter_model.safetensors``.

    Raises:
        CheckpointError: missing files, unsupported options (DoRA, fan_in_fan_out, embedding
            LoRA), or unpaired A/B tensors; the message names the file or tensor.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        cfg_path = self.path / "adapter_config.json"
        try:
            self.config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{cfg_path}: not found (is {self.path} a PEFT LoRA directory?)") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{cfg_path}: unreadable ({exc})") from None
        if self.config.get("peft_type", "LORA") != "LORA":
            raise CheckpointError(f"{cfg_path}: peft_type {self.config.get('peft_type')!r} is not LORA")
        for flag in ("use_dora", "fan_in_fan_out"):
            if self.config.get(flag):
                raise CheckpointError(f"{cfg_path}: {flag}=true is not supported")
        self.file = SafetensorsFile(self.path / "adapter_model.safetensors")
        alpha = float(self.config.get("lora_alpha", self.config.get("r", 8)))
        rslora = bool(self.config.get("use_rslora", False))
        alpha_pattern = self.config.get("alpha_pattern") or {}
        found: dict[str, dict[str, str]] = {}
        for key in self.file:
            m = _KEY.match(key)
            if not m:
                if "lora_embedding" in key:
                    raise CheckpointError(f"{self.file.path}: tensor {key!r}: embedding LoRA is not supported")
                continue
            found.setdefault(m["module"], {})[m["ab"]] = key
        self.targets: dict[str, _Pair] = {}
        for module, ab in found.items():
            if set(ab) != {"A", "B"}:
                raise CheckpointError(f"{self.file.path}: module {module!r} has lora_{''.join(ab)} without its pair")
            r = self.file.info(ab["A"]).shape[0]
            a = alpha
            for pat, val in alpha_pattern.items():
                if module == pat or module.endswith("." + pat) or re.fullmatch(pat, module):
                    a = float(val)
            scale = a / math.sqrt(r) if rslora else a / r
            self.targets[f"{module}.weight"] = _Pair(ab["A"], ab["B"], scale)
        if not self.targets:
            raise CheckpointError(f"{self.file.path}: no LoRA tensors (base_model.model.*.lora_A/B.weight)")

    def shape_of(self, target: str) -> tuple[int, int]:
        """The (out, in) shape the adapter implies for ``target``."""
        p = self.targets[target]
        return (self.file.info(p.b).shape[0], self.file.info(p.a).shape[1])

    def check_against(self, shapes: dict[str, tuple[int, ...]], model: str) -> None:
        """Every target must exist in the model with the adapter's shape.

        Raises:
            CheckpointError: naming the adapter, the tensor and both shapes (an adapter for another base).
        """
        for target in self.targets:
            if target not in shapes:
                raise CheckpointError(
                    f"{self.path}: adapter targets tensor {target!r}, which model {model} does not have "
                    "(an adapter for another base model?)"
                )
            want = self.shape_of(target)
            if tuple(shapes[target]) != want:
                raise CheckpointError(
                    f"{self.path}: adapter for {target!r} implies shape {want}, model {model} has "
                    f"{tuple(shapes[target])} (an adapter for another base model?)"
                )

    def delta(self, target: str, rows: tuple[int, int] | None = None) -> torch.Tensor | None:
        """``s · B @ A`` for ``target`` in fp32 (only rows ``[r0, r1)`` if given), or None if not targeted."""
        p = self.targets.get(target)
        if p is None:
            return None
        b = self.file.get(p.b).float()  # (out, r)
        a = self.file.get(p.a).float()  # (r, in)
        if rows is not None:
            b = b[rows[0] : rows[1]]
        return (b @ a).mul_(p.scale)
