"""Merge maths on hand-computed cases (issue #22; tests/MUTATIONS.md).

Each test names, in its docstring, the planted bugs of ``scripts/mutants.json`` (area ``merge``)
it catches; tests/MUTATIONS.md lists which of them main's tests let through.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmbricks.merge.lora import LoraAdapter

TARGET = "model.layers.0.self_attn.q_proj"


def _adapter(path: Path, **config: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A PEFT LoRA directory with one rank-4 module; returns its (A, B)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=gen), torch.randn(5, 4, generator=gen)
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, **config}))
    prefix = f"base_model.model.{TARGET}"
    save_file({f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b}, str(path / "adapter_model.safetensors"))
    return a, b


def test_lora_scale_is_alpha_over_r_or_over_its_root_with_rslora(tmp_path: Path) -> None:
    """alpha 8, rank 4: the update is 2 B A, and 8 / sqrt(4) = 4 B A with ``use_rslora`` (PEFT's scalings).
    Catches ``lora rslora ignored``."""
    a, b = _adapter(tmp_path / "plain", lora_alpha=8)
    delta = LoraAdapter(tmp_path / "plain").delta(f"{TARGET}.weight")
    assert delta is not None and torch.allclose(delta, 2 * b @ a)
    a, b = _adapter(tmp_path / "rs", lora_alpha=8, use_rslora=True)
    delta = LoraAdapter(tmp_path / "rs").delta(f"{TARGET}.weight")
    assert delta is not None and torch.allclose(delta, 4 * b @ a)
