"""Combine several LoRA bricks into one: pure functions on factors (no files, no models).

Each brick is ``{module_path: LoraPair}``; each module's update is ``s_i B_i A_i``. Methods:

- ``cat``: exact. ``A = [w_1 s_1 A_1; ...; w_n s_n A_n]`` (rows), ``B = [B_1 ... B_n]`` (columns), so
  ``B A = sum_i w_i s_i B_i A_i``; the rank is the sum of the ranks.
- ``svd``: the exact weighted sum of the dense updates, recompressed to ``rank`` by truncated SVD.
- ``ties`` / ``dare``: TIES-merging / DARE on the dense updates (the task vectors of the bricks), then
  SVD recompression (PEFT calls these ``ties_svd`` / ``dare_linear_svd``); they reuse
  :mod:`lmbricks.merge`'s tensor functions with a zero base.
- ``linear``: PEFT's ``linear`` combination: ``A = sum_i sign(w_i) sqrt(|w_i s_i|) A_i``,
  ``B = sum_i sqrt(|w_i s_i|) B_i``; same rank needed; approximate (it adds cross terms
  ``B_i A_j``).
- ``lorahub``: LoraHub's combination (arXiv 2307.13269): ``A = sum_i w_i A_i``, ``B = sum_i w_i s_i B_i``.
  Weighting A and B separately makes the update quadratic in the weights
  (``sum_ij w_i w_j s_j B_j A_i``); one-hot weights give a brick exactly and zero weights nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lmbricks.adapters.brick import LoraPair
from lmbricks.errors import ConfigError

Factors = dict[str, LoraPair]
METHODS = ("cat", "svd", "linear", "ties", "dare", "lorahub")


@dataclass(frozen=True)
class Composition:
    """A composed adapter and, for SVD-based methods, its relative reconstruction error.

    Attributes:
        pairs: ``{module_path: LoraPair}`` with scale 1 (folded into B).
        rel_error: ``||delta - B A||_F / ||delta||_F`` over all modules (0 for exact methods), where
            ``delta`` is what the method meant before recompression.
    """

    pairs: Factors
    rel_error: float = 0.0


def _check(bricks: Sequence[Factors], weights: Sequence[float]) -> list[str]:
    if not bricks:
        raise ConfigError("compose needs at least one brick")
    if len(weights) != len(bricks):
        raise ConfigError(f"got {len(weights)} weights for {len(bricks)} bricks")
    modules = sorted({m for b in bricks for m in b})
    for m in modules:
        shapes = {(b[m].B.shape[0], b[m].A.shape[1]) for b in bricks if m in b}
        if len(shapes) > 1:
            raise ConfigError(f"bricks disagree on the shape of {m}: {sorted(shapes)}")
    return modules


def _shape(bricks: Sequence[Factors], module: str) -> tuple[int, int]:
    pair = next(b[module] for b in bricks if module in b)
    return pair.B.shape[0], pair.A.shape[1]


def _pair_or_zero(brick: Factors, module: str, rank: int, shape: tuple[int, int]) -> LoraPair:
    if module in brick:
        return brick[module]
    return LoraPair(A=torch.zeros(rank, shape[1]), B=torch.zeros(shape[0], rank), scale=1.0)


def _max_rank(brick: Factors) -> int:
    return max(p.rank for p in brick.values())


def compose_cat(bricks: Sequence[Factors], weights: Sequence[float]) -> Composition:
    """Exact concatenation (rank = sum of ranks). A module missing from a brick gets zero factors."""
    modules = _check(bricks, weights)
    ranks = [_max_rank(b) for b in bricks]
    out: Factors = {}
    for m in modules:
        shape = _shape(bricks, m)
        pairs = [_pair_or_zero(b, m, r, shape) for b, r in zip(bricks, ranks, strict=False)]
        A = torch.cat([w * p.scale * p.A.float() for p, w in zip(pairs, weights, strict=False)], dim=0)  # (sum r, in)
        B = torch.cat([p.B.float() for p in pairs], dim=1)  # (out, sum r)
        out[m] = LoraPair(A=A, B=B, scale=1.0)
    return Composition(out)


def svd_compress(delta: torch.Tensor, rank: int) -> LoraPair:
    """Best rank-``rank`` factors of a dense update (Eckart-Young): ``B = U_r S_r``, ``A = V_r^T``.

    Args:
        delta: (out, in).
        rank: kept singular values (capped at min(out, in)).

    Returns:
        A :class:`LoraPair` with scale 1.
    """
    U, S, Vh = torch.linalg.svd(delta.float(), full_matrices=False)  # (out,k) (k,) (k,in)
    r = min(rank, S.numel())
    return LoraPair(A=Vh[:r].contiguous(), B=(U[:, :r] * S[:r]).contiguous(), scale=1.0)


def _compose_dense(
    bricks: Sequence[Factors],
    weights: Sequence[float],
    rank: int | None,
    combine: Callable[[list[torch.Tensor]], torch.Tensor],
) -> Composition:
    modules = _check(bricks, weights)
    r_out = rank or max(_max_rank(b) for b in bricks)
    if r_out < 1:
        raise ConfigError(f"rank must be >= 1, got {r_out}")
    out: Factors = {}
    err2 = norm2 = 0.0
    for m in modules:
        deltas = [b[m].delta() if m in b else torch.zeros(_shape(bricks, m)) for b in bricks]
        target = combine(deltas)
        pair = svd_compress(target, r_out)
        if pair.rank < r_out:  # pad so every module shares one rank (PEFT needs it)
            pad = r_out - pair.rank
            pair = LoraPair(
                A=torch.cat([pair.A, torch.zeros(pad, pair.A.shape[1])]),
                B=torch.cat([pair.B, torch.zeros(pair.B.shape[0], pad)], dim=1),
                scale=1.0,
            )
        out[m] = pair
        err2 += float((target - pair.delta()).pow(2).sum())
        norm2 += float(target.pow(2).sum())
    return Composition(out, rel_error=(err2 / norm2) ** 0.5 if norm2 > 0 else 0.0)


def compose_svd(bricks: Sequence[Factors], weights: Sequence[float], rank: int | None = None) -> Composition:
    """Weighted sum of dense updates, truncated-SVD to ``rank`` (default: the largest input rank)."""
    return _compose_dense(
        bricks,
        weights,
        rank,
        lambda ds: sum((w * d for w, d in zip(weights, ds, strict=False)), torch.zeros_like(ds[0])),
    )


def compose_ties(
    bricks: Sequence[Factors], weights: Sequence[float], density: float = 0.2, rank: int | None = None
) -> Composition:
    """TIES on the dense updates (trim to top ``density`` by magnitude, elect sign, disjoint mean); SVD."""
    from lmbricks.merge.methods.task_arithmetic import FAMILY

    def combine(ds: list[torch.Tensor]) -> torch.Tensor:
        zero = torch.zeros_like(ds[0])
        return FAMILY["ties"].merge(zero, ds, weight=list(weights), density=[density] * len(ds))

    return _compose_dense(bricks, weights, rank, combine)


def compose_dare(
    bricks: Sequence[Factors],
    weights: Sequence[float],
    density: float = 0.5,
    rank: int | None = None,
    seed: int = 0,
) -> Composition:
    """DARE on the dense updates (drop with keep probability ``density``, rescale, add); SVD."""
    from lmbricks.merge.methods.task_arithmetic import FAMILY

    gen = torch.Generator().manual_seed(seed)

    def combine(ds: list[torch.Tensor]) -> torch.Tensor:
        zero = torch.zeros_like(ds[0])
        dare = FAMILY["dare_linear"].merge
        return dare(zero, ds, weight=list(weights), density=[density] * len(ds), rescale_mode="inverse", generator=gen)

    return _compose_dense(bricks, weights, rank, combine)


def _same_rank(bricks: Sequence[Factors], method: str) -> int:
    ranks = {_max_rank(b) for b in bricks} | {p.rank for b in bricks for p in b.values()}
    if len(ranks) != 1:
        raise ConfigError(f"{method} needs bricks of one rank, got ranks {sorted(ranks)} (use cat or svd)")
    return ranks.pop()


def _weighted_factors(
    bricks: Sequence[Factors],
    weights: Sequence[float],
    modules: Sequence[str],
    rank: int,
    coefs: Callable[[float, float], tuple[float, float]],
) -> Factors:
    """Per module ``A = sum a_i A_i`` and ``B = sum b_i B_i`` with ``(a_i, b_i) = coefs(w_i, s_i)``, scale 1.

    ``s_i`` is brick i's LoRA scale on the module; a brick without the module, or whose coefficients
    are both 0, adds nothing.
    """
    out: Factors = {}
    for m in modules:
        shape = _shape(bricks, m)
        A = torch.zeros(rank, shape[1])  # (r, in)
        B = torch.zeros(shape[0], rank)  # (out, r)
        for b, w in zip(bricks, weights, strict=False):
            if m not in b:
                continue
            ca, cb = coefs(w, b[m].scale)
            if ca == 0.0 and cb == 0.0:
                continue
            A += ca * b[m].A.float()
            B += cb * b[m].B.float()
        out[m] = LoraPair(A=A, B=B, scale=1.0)
    return out


def _linear_coefs(w: float, scale: float) -> tuple[float, float]:
    """PEFT's ``linear``: ``sqrt|w s|`` on both factors, the sign on A."""
    ws = w * scale
    root = abs(ws) ** 0.5
    return (root if ws >= 0 else -root), root


def compose_linear(bricks: Sequence[Factors], weights: Sequence[float]) -> Composition:
    """PEFT's ``linear`` combination (approximate: it adds cross terms between bricks)."""
    modules = _check(bricks, weights)
    r = _same_rank(bricks, "linear")
    return Composition(_weighted_factors(bricks, weights, modules, r, _linear_coefs))


def lorahub_factors(bricks: Sequence[Factors], weights: Sequence[float] | torch.Tensor) -> Factors:
    """LoraHub's combination: ``A = sum w_i A_i``, ``B = sum w_i s_i B_i`` (each brick's scale in B).

    Args:
        bricks: bricks of one rank.
        weights: one weight per brick (a list or a (n,) tensor).

    Returns:
        ``{module_path: LoraPair}`` with scale 1.
    """
    w = [float(x) for x in weights]
    modules = _check(bricks, w)
    r = _same_rank(bricks, "lorahub")
    return _weighted_factors(bricks, w, modules, r, lambda wi, scale: (wi, wi * scale))


def compose(
    method: str,
    bricks: Sequence[Factors],
    weights: Sequence[float] | None = None,
    *,
    rank: int | None = None,
    density: float | None = None,
    seed: int = 0,
) -> Composition:
    """Dispatch to one combination method.

    Args:
        method: one of :data:`METHODS`.
        bricks: the bricks' factors.
        weights: one weight per brick (default: all 1 for cat/svd/ties/dare/linear, 1/n for lorahub).
        rank: output rank for svd, ties and dare.
        density: kept fraction for ties (default 0.2) and dare (default 0.5).
        seed: DARE's random drop.

    Returns:
        The :class:`Composition`.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown compose method {method!r}; choose one of {', '.join(METHODS)}")
    if weights is None:
        weights = [1.0 / len(bricks)] * len(bricks) if method == "lorahub" and bricks else [1.0] * len(bricks)
    if density is not None and not 0 < density <= 1:
        raise ConfigError(f"density must be in (0, 1], got {density}")
    if method == "cat":
        return compose_cat(bricks, weights)
    if method == "svd":
        return compose_svd(bricks, weights, rank)
    if method == "ties":
        return compose_ties(bricks, weights, density or 0.2, rank)
    if method == "dare":
        return compose_dare(bricks, weights, density or 0.5, rank, seed)
    if method == "linear":
        return compose_linear(bricks, weights)
    return Composition(lorahub_factors(bricks, weights))
