"""Write a grown model: Hugging Face directory (Mixtral / Qwen2-MoE), tokenizer, lmbricks.json inventory."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM

if TYPE_CHECKING:
    from lmbricks.grow.assemble import AssemblyPlan

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str | None, default: torch.dtype) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` (and mergekit's aliases) -> torch dtype; None -> default."""
    if name is None:
        return default
    from lmbricks.grow.recipe import DTYPES

    key = DTYPES.get(name)
    if key is None:
        raise ConfigError(f"dtype: unknown dtype {name!r} (choose from {', '.join(DTYPES)})")
    return _DTYPES[key]


def stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype a model directory stores its weights in (config.json ``dtype``/``torch_dtype``, else fp32)."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return torch.float32
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return _DTYPES.get(str(name), torch.float32)


def check_destination(out: str | Path, force: bool, refs: Iterable[str | Path | None] = ()) -> Path:
    """Run the input guard on ``out`` before any work (the atomic write checks again at the end).

    Args:
        out: the output directory.
        force: replace an existing output that lmbricks wrote.
        refs: the model references and files the command reads (registry names are their cache
            directories; nothing is fetched).

    Returns:
        ``out`` (user home expanded).

    Raises:
        ConfigError: ``out`` is, contains or lies inside an input, or may not be replaced.
    """
    from lmbricks.checkpoint import check_output
    from lmbricks.hub import reference_paths

    out = Path(out).expanduser()
    check_output(out, [p for ref in refs for p in reference_paths(ref)], force)
    return out


def save_grown(
    model: LM,
    out: str | Path,
    *,
    tokenizer_from: Path,
    dtype: torch.dtype,
    command: str,
    recipe: dict[str, Any] | None,
    inputs: Mapping[str, str | Path],
    bricks: dict[str, Any],
    force: bool = False,
) -> Path:
    """Write ``model`` atomically: weights in the family that expresses it, tokenizer, provenance.

    Args:
        model: the sparse LM.
        out: the output directory (refused if it exists unless ``force``).
        tokenizer_from: directory whose tokenizer files are copied.
        dtype: storage dtype.
        command: the command line recorded in lmbricks.json.
        recipe: the validated recipe / options.
        inputs: name -> model directory or file, hashed into lmbricks.json.
        bricks: the inventory (experts, routers, shared expert).
        force: replace an existing ``out``.

    Returns:
        ``out``.
    """
    from lmbricks.checkpoint import atomic_directory, copy_tokenizer, write_provenance
    from lmbricks.nn.hf import export_family
    from lmbricks.nn.load import write_model_dir

    family, reason = export_family(model.cfg)
    bricks = {**bricks, "family": family, "transformers_exact": reason is None}
    with atomic_directory(Path(out), force=force, inputs=inputs) as tmp:
        write_model_dir(model, tmp, tokenizer=None, dtype=dtype, provenance={"command": command, "inputs": {}})
        copy_tokenizer(tokenizer_from, tmp)
        write_provenance(tmp, command=command, recipe=recipe, inputs=inputs, bricks=bricks)
    return Path(out)


def inventory(plan: AssemblyPlan, layers: list[int], max_cosine: list[float], out: str | Path) -> dict[str, Any]:
    """The lmbricks.json inventory of an assembled MoE (paths relative to ``out``).

    Args:
        plan: the checked recipe and its opened sources.
        layers: the model index of each MoE layer.
        max_cosine: per MoE layer, the largest cosine between two router rows.
        out: the output directory.

    Returns:
        Each expert's source, brick and domain; the shared experts (``shared_expert``: the first, as
        before several were allowed); the routers (mode, top-k, layers).
    """
    from lmbricks.checkpoint.provenance import reference_name

    r = plan.recipe
    experts = []
    for e, (spec, src) in enumerate(zip(r.experts, plan.experts, strict=True)):
        experts.append({"index": e, "label": spec.label(), "domain": spec.domain, **src.describe(out)})
    shared = [
        {"label": spec.label(), "domain": spec.domain, **src.describe(out)}
        for spec, src in zip(r.shared_experts or [], plan.shared, strict=True)
    ]
    return {
        "base_model": reference_name(plan.base_path, out),
        "experts": experts,
        "shared_expert": shared[0] if shared else None,
        "shared_experts": shared,
        "non_experts": r.non_experts,
        "routers": {
            "gate_mode": r.gate_mode,
            "top_k": r.experts_per_token,
            "layers": layers,
            "max_row_cosine": [round(c, 4) for c in max_cosine],
        },
    }
