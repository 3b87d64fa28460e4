"""Generalised task arithmetic: the shared core of task_arithmetic, TIES, DARE, Breadcrumbs, DELLA.

With base ``θ0``, inputs ``θi``, weights ``wi`` and a per-input sparsifier ``S``::

    δi = S(θi - θ0)                       # trim (TIES, Breadcrumbs), drop (DARE, DELLA) or keep
    ui = wi · δi                          # weighted task vectors
    with consensus (TIES):  s = sign(Σ ui) (0 counts as +);  mi = [sign(ui) = s]
    without:                mi = 1
    Δ = Σ mi ui  /  (Σ mi wi  if normalize, per element; 0 -> 1)     # consensus
    Δ = Σ ui     /  (Σ wi     if normalize; |Σ wi| < 1e-8 -> 1)     # no consensus
    θ = θ0 + λ Δ

The sign is elected on the *weighted* deltas, as mergekit does; the TIES paper (and PEFT) elect on
unweighted ones. The two agree when all weights are positive and equal.

The primitives, PEFT-style: sparsifiers (:func:`prepare_trim` with :func:`apply_trim` for the
magnitude and outlier windows of TIES and Breadcrumbs, streamed in row blocks; :func:`random_drop`
for DARE; :func:`magprune` for DELLA), :func:`elect_sign`, :func:`disjoint_merge`, and
:func:`combine_deltas` around them. The named methods are rows of one table in
:mod:`lmbricks.merge.methods.task_arithmetic`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmbricks.merge.sparsify import (
    RankWindow,
    della_probabilities,
    magnitude_ranks,
    magnitude_window,
    outlier_ranks,
    outlier_window,
    window_of_ranks,
)

#: Elements per row block when a tensor is processed in pieces: the executor's chunked methods (one
#: work item per block) and the unfused ``|δ|`` pass. Measured 2026-12-06 on this project's 2-core
#: machine (loaded), fused TIES apply over an 8192 x 4096 bf16 tensor, two inputs, two workers: best
#: of 5, 61-65 ms for blocks of 2^19 to 2^22 elements alike, 143 ms at 2^23 (too few blocks to share
#: out). 2^21 keeps the eager path's fp32 temporaries at 8 MB each; bench/merge.py ran with it.
ROW_BLOCK = 1 << 21

#: The fused kernels (:mod:`lmbricks.merge.kernels`) are used where they apply unless the environment
#: sets ``LMBRICKS_FUSED=0`` when lmbricks is imported (read once, here).
USE_FUSED = os.environ.get("LMBRICKS_FUSED", "1") != "0"


def elect_sign(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES sign election: ``s = sign(Σ wi δi)`` as ±1 (fp32, shaped like the deltas).

    An exact cancellation sums to +0 and counts as + (as in mergekit); -0 only arises where every
    term is 0, where nothing can agree anyway.
    """
    total = torch.mul(deltas[0], weights[0])
    for d, w in zip(deltas[1:], weights[1:], strict=True):
        total.add_(d, alpha=w)
    return torch.ones_like(total).copysign_(total)


def disjoint_merge(
    deltas: Sequence[torch.Tensor], weights: Sequence[float], sign: torch.Tensor, *, normalize: bool
) -> torch.Tensor:
    """TIES disjoint merge: ``Σ mi wi δi`` over the entries that agree with ``sign`` (``mi = [sign(wi δi) = s]``),
    divided per entry by ``Σ mi wi`` when ``normalize`` (0 -> 1).

    Args:
        deltas: δi (fp32, shape ``S``); overwritten (used as scratch).
        weights: wi.
        sign: the elected sign (:func:`elect_sign`), shape ``S``.
        normalize: divide by the summed weights of the agreeing inputs.

    Returns:
        fp32 tensor of shape ``S``.
    """
    mixed = torch.zeros_like(deltas[0])
    divisor = torch.zeros_like(deltas[0]) if normalize else None
    for d, w in zip(deltas, weights, strict=True):
        if w == 0:
            continue  # w·d is 0: its sign never agrees
        # sign(w·d) = s  <=>  w·(d·s) > 0; keep w·(d·s) where positive, i.e. the agreeing entries
        v = d.mul_(sign)
        if w > 0:
            v.clamp_(min=0)
        else:
            v.clamp_(max=0)
        mixed.add_(v, alpha=w)
        if divisor is not None:
            divisor.add_(v.sign().abs_(), alpha=w)  # 1 where the entry agrees
    if divisor is not None:
        divisor.masked_fill_(divisor == 0, 1)
        mixed.div_(divisor)
    return mixed.mul_(sign)  # back from |Σ| in the elected direction to signed values


def combine_deltas(
    base: torch.Tensor,
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    consensus: bool,
    normalize: bool,
    lam: float,
) -> torch.Tensor:
    """Weight, optionally elect signs, sum, normalise and add to the base (see module docstring).

    Args:
        base: θ0, any float dtype, shape ``S``.
        deltas: sparsified task vectors δi (fp32, shape ``S``); overwritten (used as scratch).
        weights: wi, one per delta.
        consensus: TIES sign election and disjoint mean.
        normalize: divide by the summed weights.
        lam: λ.

    Returns:
        fp32 tensor of shape ``S``.
    """
    if not deltas:
        return base.float()
    if consensus:
        mixed = disjoint_merge(deltas, weights, elect_sign(deltas, weights), normalize=normalize)
    else:
        mixed = torch.zeros_like(deltas[0])
        for d, w in zip(deltas, weights, strict=False):
            mixed.add_(d, alpha=w)
        if normalize:
            s = float(sum(weights))
            mixed.div_(s if abs(s) >= 1e-8 else 1.0)
    if lam != 1:
        mixed.mul_(lam)
    return mixed.add_(base)


def row_blocks(shape: torch.Size | tuple[int, ...], block: int = ROW_BLOCK) -> list[tuple[int, int]]:
    """Row ranges ``[(r0, r1), ...]`` along dim 0 holding about ``block`` elements each (1 for 0-D)."""
    if len(shape) == 0:
        return [(0, 1)]
    rows = shape[0]
    per_row = max(1, int(torch.Size(shape[1:]).numel()))
    step = max(1, block // per_row)
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def abs_delta(base: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``|tensor - base|`` as a flat fp32 tensor, computed block by block (scratch: one block)."""
    out = torch.empty(tensor.numel(), dtype=torch.float32)
    if tensor.dim() == 0:
        out[0] = (tensor.float() - base.float()).abs()
        return out
    per_row = tensor[0].numel() if tensor.shape[0] else 0
    for r0, r1 in row_blocks(tensor.shape):
        blk = out[r0 * per_row : r1 * per_row].view(r1 - r0, *tensor.shape[1:])
        torch.sub(tensor[r0:r1].float(), base[r0:r1].float(), out=blk)
        blk.abs_()
    return out


def fused_ok(*tensors: torch.Tensor | None) -> bool:
    """Whether the fused kernels (:mod:`lmbricks.merge.kernels`) compute this: CPU, contiguous, fp32
    or bf16 inputs of one dtype, and :data:`USE_FUSED`."""
    present = [t for t in tensors if t is not None]
    return (
        USE_FUSED
        and bool(present)
        and len({t.dtype for t in present}) == 1
        and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16) for t in present)
        and all(t.is_contiguous() for t in present)
    )


def _fused_window(base: torch.Tensor, tensor: torch.Tensor, density: float, gamma: float | None) -> RankWindow | None:
    """:func:`magnitude_window` / :func:`outlier_window` of ``|tensor - base|`` by the radix-select kernel."""
    from lmbricks.merge import kernels

    n = tensor.numel()
    ranks = magnitude_ranks(n, density) if gamma is None else outlier_ranks(n, density, gamma)
    if ranks is None:
        return None
    if ranks[0] == ranks[1]:
        return RankWindow(float("inf"), 0, float("inf"), 0)
    return window_of_ranks(
        n,
        *ranks,
        lambda k: kernels.rank_of_abs_delta(base, tensor, k),
        lambda v, j: kernels.abs_delta_tie_position(base, tensor, v, j),
        zero_is_free=True,
    )


@dataclass(frozen=True)
class TrimState:
    """Per-input result of the whole-tensor pass: which ranks are kept and the L1 rescale factor."""

    window: RankWindow | None
    scale: float = 1.0


def prepare_trim(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    density: Sequence[float],
    gamma: Sequence[float] | None,
    rescale: bool,
) -> list[TrimState]:
    """Whole-tensor statistics for magnitude trimming (TIES) or outlier trimming (Breadcrumbs).

    Args:
        base: θ0.
        tensors: θi.
        density: kept fraction per input.
        gamma: per input, fraction of largest entries dropped (Breadcrumbs), or None (TIES).
        rescale: compute the L1 rescale factor ``|δ|₁ / |trim(δ)|₁``.

    Returns:
        One :class:`TrimState` per input.
    """
    states = []
    for i, t in enumerate(tensors):
        if not rescale and fused_ok(base, t):
            states.append(TrimState(_fused_window(base, t, density[i], None if gamma is None else gamma[i])))
            continue
        mags = abs_delta(base, t)
        window = magnitude_window(mags, density[i]) if gamma is None else outlier_window(mags, density[i], gamma[i])
        scale = 1.0
        if rescale and window is not None:
            before = float(mags.sum(dtype=torch.float64))
            after = float((mags * window.mask(mags)).sum(dtype=torch.float64))
            if before >= 1e-7 and after >= 1e-7:
                scale = before / after
        states.append(TrimState(window, scale))
        del mags
    return states


def apply_trim(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    states: Sequence[TrimState],
    weight: Sequence[float],
    *,
    offset: int,
    consensus: bool,
    normalize: bool,
    lam: float,
    out: torch.Tensor | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """Trim each delta with its state, then :func:`combine_deltas` (one block at flat ``offset``).

    With ``out`` (any float dtype, the block's shape), the result is written there and returned.
    ``fused=False`` keeps to the eager functions even where the kernels apply.
    """
    if fused and fused_ok(base, *tensors):
        from lmbricks.merge import kernels

        return kernels.combine_block(
            base,
            list(tensors),
            list(weight),
            windows=[st.window for st in states],
            scales=[st.scale for st in states],
            offset=offset,
            consensus=consensus,
            normalize=normalize,
            lam=lam,
            out=out,
        )
    b = base.float()
    deltas = []
    for t, st in zip(tensors, states, strict=False):
        d = t.float().sub_(b) if t.dtype != torch.float32 else t - b
        if st.window is not None:
            d.mul_(st.window.mask(d.abs(), offset))
        if st.scale != 1.0:
            d.mul_(st.scale)
        deltas.append(d)
    res = combine_deltas(b, deltas, weight, consensus=consensus, normalize=normalize, lam=lam)
    return res if out is None else out.copy_(res)


def random_drop(
    delta: torch.Tensor,
    keep_prob: torch.Tensor | float,
    *,
    rescale: bool,
    rescale_mode: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Drop entries of ``delta`` at random (DARE, DELLA) and rescale the survivors.

    Args:
        delta: fp32 task vector.
        keep_prob: probability of keeping each entry (scalar, or a tensor broadcastable to ``delta``).
        rescale: rescale the kept entries.
        rescale_mode: ``l1`` (mergekit: match ``|δ|₁``) or ``inverse`` (divide by ``keep_prob``;
            then ``E[result] = δ`` exactly).
        generator: source of randomness.

    Returns:
        fp32 tensor shaped like ``delta``.
    """
    probs = (
        torch.full(delta.shape, float(keep_prob), dtype=torch.float32)
        if not isinstance(keep_prob, torch.Tensor)
        else keep_prob.expand(delta.shape).contiguous()
    )
    mask = torch.bernoulli(probs, generator=generator)
    kept = delta * mask
    if not rescale:
        return kept
    if rescale_mode == "inverse":
        # an entry with keep probability 0 is never kept: 0 / 0 would make it NaN (density 0)
        return kept.div_(probs.clamp_(min=torch.finfo(torch.float32).tiny))
    before = float(delta.abs().sum(dtype=torch.float64))
    after = float(kept.abs().sum(dtype=torch.float64))
    if before < 1e-7 or after < 1e-7:
        return kept
    return kept.mul_(before / after)


def magprune(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    *,
    rescale: bool,
    rescale_mode: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """DELLA's MagPrune: :func:`random_drop` with keep probabilities rising with the ``|δ|`` rank
    in each row from ``density - epsilon`` to ``density + epsilon``
    (:func:`~lmbricks.merge.sparsify.della_probabilities`).

    Returns:
        fp32 tensor shaped like ``delta``.
    """
    probs = della_probabilities(delta, density, epsilon).reshape(delta.shape)
    return random_drop(delta, probs, rescale=rescale, rescale_mode=rescale_mode, generator=generator)
