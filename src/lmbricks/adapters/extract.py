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
    """Factors, full-rank saved tensors and reconstruction errors of an extraction.

    Attributes:
        pairs: ``{module: LoraPair}``, every pair zero-padded to the requested rank.
        module_error: relative Frobenius error ``||delta - B A||_F / ||delta||_F`` per module.
        module_rank: singular values kept per module (below the rank where ``sv_epsilon`` cut).
        saved: ``{checkpoint key: fine-tuned tensor}`` of the modules saved at full rank.
        rel_error: the error over all factored modules together.
        skipped_unchanged: factored modules whose delta is exactly zero.
    """

    pairs: dict[str, LoraPair]
    module_error: dict[str, float] = field(default_factory=dict)
    module_rank: dict[str, int] = field(default_factory=dict)
    saved: dict[str, torch.Tensor] = field(default_factory=dict)
    rel_error: float = 0.0
    skipped_unchanged: int = 0


def factor_delta(delta: torch.Tensor, rank: int, sv_epsilon: float = 0.0) -> tuple[LoraPair, int]:
    """Best rank-``rank`` factors of one delta, dropping singular values ``<= sv_epsilon``, zero-padded.

    Args:
        delta: (out, in) fp32.
        rank: the adapter's rank (the factors are padded with zero rows/columns up to it).
        sv_epsilon: singular values at or below it are discarded (mergekit's ``--sv-epsilon``; 0 keeps all).

    Returns:
        The pair (A: (rank, in), B: (out, rank), scale 1) and the number of singular values kept.
    """
    pair = svd_compress(delta, rank)
    kept = pair.rank
    if sv_epsilon > 0:
        s = pair.B.norm(dim=0)  # (r,): the singular values (A's rows are orthonormal)
        kept = int((s > sv_epsilon).sum())
    if kept < rank:
        pad = rank - kept
        pair = LoraPair(
            torch.cat([pair.A[:kept], torch.zeros(pad, pair.A.shape[1])]),
            torch.cat([pair.B[:, :kept], torch.zeros(pair.B.shape[0], pad)], dim=1),
            1.0,
        )
    return pair, kept


def _saved_tensors(finetuned: CheckpointReader, modules_to_save: Sequence[str]) -> dict[str, torch.Tensor]:
    saved: dict[str, torch.Tensor] = {}
    for name in modules_to_save:
        keys = [k for k in finetuned if k.rsplit(".", 1)[0].rsplit(".", 1)[-1] == name]
        if not keys:
            raise CheckpointError(
                f"modules_to_save: no weight of a module named {name!r} in the fine-tuned checkpoint"
                " (a tied lm_head has none: save embed_tokens)"
            )
        saved.update({k: finetuned.get(k).float() for k in keys})
    return saved


def extract_pairs(
    base: CheckpointReader,
    finetuned: CheckpointReader,
    rank: int,
    targets: Sequence[str] = DEFAULT_TARGETS,
    *,
    sv_epsilon: float = 0.0,
    modules_to_save: Sequence[str] = (),
) -> Extraction:
    """Factor the deltas of the target weights; copy the ``modules_to_save`` weights at full rank.

    Args:
        base: the base checkpoint.
        finetuned: the fine-tuned checkpoint (same architecture).
        rank: LoRA rank.
        targets: module name suffixes to extract (``q_proj``, ...).
        sv_epsilon: drop singular values at or below it (per-module ranks, in ``module_rank``).
        modules_to_save: module name suffixes (``embed_tokens``, ``norm``, ...) saved whole, as PEFT's
            ``modules_to_save``; none may also be a target.

    Returns:
        The :class:`Extraction`. Modules whose delta is exactly zero still get (zero) factors so the
        adapter keeps one rank everywhere.

    Raises:
        ConfigError: rank below 1, negative ``sv_epsilon``, a module both factored and saved.
        CheckpointError: a target weight is missing from one side or shapes differ.
    """
    if rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}")
    if sv_epsilon < 0:
        raise ConfigError(f"sv_epsilon must be >= 0, got {sv_epsilon}")
    if both := sorted(set(targets) & set(modules_to_save)):
        raise ConfigError(f"modules_to_save: {', '.join(both)} also a LoRA target; pick one")
    result = Extraction(pairs={}, saved=_saved_tensors(finetuned, modules_to_save))
    err2 = norm2 = 0.0
    for key in base:
        module = key[: -len(".weight")]
        if not key.endswith(".weight") or module.rsplit(".", 1)[-1] not in targets:
            continue
        if key not in finetuned:
            raise CheckpointError(f"{key}: in the base but not in the fine-tuned checkpoint")
        w0, w1 = base.get(key).float(), finetuned.get(key).float()
        if w0.shape != w1.shape or w0.dim() != 2:
            raise CheckpointError(f"{key}: shapes {tuple(w0.shape)} (base) and {tuple(w1.shape)} (fine-tuned)")
        delta = w1 - w0  # (out, in)
        pair, result.module_rank[module] = factor_delta(delta, rank, sv_epsilon)
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
    sv_epsilon: float = 0.0,
    modules_to_save: Sequence[str] = (),
    name: str | None = None,
    domain: str | None = None,
    force: bool = False,
    dtype: str = "float32",
    command: str = "lmbricks.adapters.extract_brick",
) -> tuple[BrickInfo, Extraction]:
    """Extract a LoRA brick from a full fine-tune and save it (atomically) as a PEFT adapter.

    Args:
        finetuned: the fine-tuned model (registry name or HF directory).
        base: the model it was fine-tuned from.
        rank: LoRA rank (every module's factors are padded to it).
        out: the brick directory to write.
        targets: module name suffixes to factor.
        sv_epsilon: drop singular values at or below it (see :func:`factor_delta`).
        modules_to_save: module name suffixes saved whole (PEFT ``modules_to_save``).
        name, domain: recorded in ``lmbricks.json``.
        force: replace an existing ``out``.
        dtype: storage dtype of the adapter.
        command: recorded as the producing command.

    Returns:
        The saved brick and the :class:`Extraction` (errors, per-module ranks).
    """
    from lmbricks.hub import reference_paths, resolve_model

    out = check_output(out, [*reference_paths(finetuned), *reference_paths(base)], force)  # before any work
    b = base_model(base)
    ft_path = resolve_model(finetuned)
    ext = extract_pairs(
        CheckpointReader(b.path),
        CheckpointReader(ft_path),
        rank,
        targets,
        sv_epsilon=sv_epsilon,
        modules_to_save=modules_to_save,
    )
    with atomic_directory(out, force=force, inputs={"base": b.path, "finetuned": ft_path}) as tmp:
        save_factors(tmp, ext.pairs, base_model=b.name, dtype=dtype, full=ext.saved)
        write_provenance(
            tmp,
            command=command,
            recipe={
                "extract": {
                    "rank": rank,
                    "targets": list(targets),
                    "sv_epsilon": sv_epsilon,
                    "modules_to_save": list(modules_to_save),
                }
            },
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
                    "min_module_rank": min(ext.module_rank.values()),
                },
            ),
        )
    return read_brick(out), ext
