"""A LoRA brick from a full fine-tune: truncated SVD of each adapted weight's delta.

For every 2-D weight ``<module>.weight`` whose module name ends in one of the targets,
``delta = W_finetuned - W_base`` is factored as ``B A`` with ``B = U_r S_r`` and ``A = V_r^T``
(the best rank-r approximation in Frobenius norm). The relative reconstruction error
``||delta - B A||_F / ||delta||_F`` is reported per module and over all modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmbricks.adapters.base import base_model
from lmbricks.adapters.brick import BrickInfo, LoraPair, brick_record, read_brick, save_factors
from lmbricks.adapters.compose import svd_compress
from lmbricks.adapters.config import DEFAULT_TARGETS
from lmbricks.checkpoint import CheckpointReader, atomic_directory, check_output, write_provenance
from lmbricks.errors import CheckpointError, ConfigError


@dataclass
class Extraction:
    """Factors and reconstruction errors of an extraction."""

    pairs: dict[str, LoraPair]
    module_error: dict[str, float] = field(default_factory=dict)
    rel_error: float = 0.0
    skipped_unchanged: int = 0


def extract_pairs(
    base: CheckpointReader, finetuned: CheckpointReader, rank: int, targets: Sequence[str] = DEFAULT_TARGETS
) -> Extraction:
    """Factor the deltas of the target weights.

    Args:
        base: the base checkpoint.
        finetuned: the fine-tuned checkpoint (same architecture).
        rank: LoRA rank.
        targets: module name suffixes to extract (``q_proj``, ...).

    Returns:
        The :class:`Extraction`. Modules whose delta is exactly zero still get (zero) factors so the
        adapter keeps one rank everywhere.

    Raises:
        CheckpointError: a target weight is missing from one side or shapes differ.
    """
    if rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}")
    result = Extraction(pairs={})
    err2 = norm2 = 0.0
    for key in base:
        if not key.endswith(".weight"):
            continue
        module = key[: -len(".weight")]
        if module.rsplit(".", 1)[-1] not in targets:
            continue
        if key not in finetuned:
            raise CheckpointError(f"{key}: in the base but not in the fine-tuned checkpoint")
        w0, w1 = base.get(key).float(), finetuned.get(key).float()
        if w0.shape != w1.shape or w0.dim() != 2:
            raise CheckpointError(f"{key}: shapes {tuple(w0.shape)} (base) and {tuple(w1.shape)} (fine-tuned)")
        delta = w1 - w0  # (out, in)
        pair = svd_compress(delta, rank)
        if pair.rank < rank:
            pad = rank - pair.rank
            pair = LoraPair(
                torch.cat([pair.A, torch.zeros(pad, pair.A.shape[1])]),
                torch.cat([pair.B, torch.zeros(pair.B.shape[0], pad)], dim=1),
                1.0,
            )
        e2 = float((delta - pair.delta()).pow(2).sum())
        n2 = float(delta.pow(2).sum())
        result.module_error[module] = (e2 / n2) ** 0.5 if n2 > 0 else 0.0
        result.skipped_unchanged += int(n2 == 0)
        err2, norm2 = err2 + e2, norm2 + n2
        result.pairs[module] = pair
    if not result.pairs:
        raise CheckpointError(f"no weight matches the targets {', '.join(targets)}")
    result.rel_error = (err2 / norm2) ** 0.5 if norm2 > 0 else 0.0
    return result


def extract_brick(
    finetuned: str | Path,
    base: str | Path,
    rank: int,
    out: str | Path,
    *,
    targets: Sequence[str] = DEFAULT_TARGETS,
    name: str | None = None,
    domain: str | None = None,
    force: bool = False,
    dtype: str = "float32",
    command: str = "lmbricks.adapters.extract_brick",
) -> tuple[BrickInfo, Extraction]:
    """Extract a LoRA brick from a full fine-tune and save it (atomically) as a PEFT adapter.

    Returns:
        The saved brick and the :class:`Extraction` (errors).
    """
    from lmbricks.hub import reference_paths, resolve_model

    out = check_output(out, [*reference_paths(finetuned), *reference_paths(base)], force)  # before any work
    b = base_model(base)
    ft_path = resolve_model(finetuned)
    ext = extract_pairs(CheckpointReader(b.path), CheckpointReader(ft_path), rank, targets)
    with atomic_directory(out, force=force, inputs={"base": b.path, "finetuned": ft_path}) as tmp:
        save_factors(tmp, ext.pairs, base_model=b.name, dtype=dtype)
        write_provenance(
            tmp,
            command=command,
            recipe={"extract": {"rank": rank, "targets": list(targets)}},
            inputs={"base": b.path, "finetuned": ft_path},
            bricks=brick_record(
                name=name or out.name,
                base_model=b.name,
                base_sha256=b.sha256,
                base_identity=b.identity,
                rank=rank,
                alpha=float(rank),
                targets=sorted({m.rsplit(".", 1)[-1] for m in ext.pairs}),
                domain=domain,
                reconstruction={
                    "rel_error": ext.rel_error,
                    "max_module_error": max(ext.module_error.values()),
                    "modules": len(ext.pairs),
                },
            ),
        )
    return read_brick(out), ext
