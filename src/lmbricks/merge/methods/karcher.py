"""Karcher mean: the weighted Riemannian (Fréchet) mean of several models' directions on the unit
sphere, scaled by their mean norm.

The fixed-point iteration runs in the span of the inputs: every iterate is ``m = Σ cj uj`` over the
unit inputs ``uj = θj / |θj|``, so the iteration needs only their Gram matrix. One streaming pass
computes it (float64 sums over row blocks), the iteration runs on ``k x k`` numbers, and the result
``Σ (s cj / |θj|) θj`` is written block by block like a ``linear`` merge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmbricks.merge.methods.streaming import gram, on_whole_tensor, weighted_sum
from lmbricks.merge.registry import ChunkedForm, Param, bind, register_method

_NAME = "karcher"
_PARAMS = (
    Param("max_iter", int, default=10, help="most fixed-point iterations", bounds="[0, inf)"),
    Param("tol", float, default=1e-5, help="stop when the tangent step is shorter; inputs with a smaller norm "
          "are left out", bounds="[0, inf)"),
)  # fmt: skip


@dataclass(frozen=True)
class KarcherState:
    """The result's coefficient on each input."""

    coeffs: tuple[float, ...]


def karcher_coefficients(g: torch.Tensor, max_iter: int = 10, tol: float = 1e-5) -> list[float]:
    """Coefficients ``aj`` with ``karcher mean = Σ aj θj``, from the Gram matrix of the inputs.

    Uniform weights ``1/k``. Inputs with norm <= ``tol`` are left out of the direction (all of them:
    the mean is 0). Start: the normalised weighted mean of the unit vectors (the first unit vector if
    that is shorter than ``tol``). Step: ``T = Σ αi Ωi / sin Ωi (ui - cos Ωi m)`` over the inputs
    with ``Ωi = acos <m, ui> >= tol``; ``m <- cos|T| m + sin|T| T/|T|``, renormalised; stop when
    ``|T| < tol``. Scale: the mean norm ``Σ |θi| / k``.

    Args:
        g: ``(k, k)`` float64 Gram matrix ``<θi, θj>``.
        max_iter: most iterations.
        tol: see above.

    Returns:
        ``k`` floats.
    """
    k = g.shape[0]
    norms = g.diagonal().clamp(min=0).sqrt()
    scale = float(norms.sum()) / k
    valid = [i for i in range(k) if float(norms[i]) > tol]
    if not valid:
        return [0.0] * k
    n = norms[valid]
    gu = g[valid][:, valid] / (n[:, None] * n[None, :])  # Gram matrix of the unit vectors
    alpha = torch.full((len(valid),), 1.0 / len(valid), dtype=torch.float64)

    def norm(c: torch.Tensor) -> float:
        return math.sqrt(max(float(c @ gu @ c), 0.0))

    c = alpha.clone()
    length = norm(c)
    c = torch.eye(len(valid), dtype=torch.float64)[0] if length < tol else c / length
    for _ in range(max_iter):
        dots = (gu @ c).clamp(-1, 1)  # <m, ui>
        theta = torch.arccos(dots)
        step = (theta >= tol) & (theta > 0)  # an input at the mean pulls nowhere (Ω/sin Ω -> 1, ui - m = 0)
        factor = torch.where(step, alpha * theta / torch.where(step, torch.sin(theta), 1.0), 0.0)
        tangent = factor - (factor * dots).sum() * c  # Σ fi (ui - <m,ui> m), as coefficients on the ui
        tn = norm(tangent)
        if tn < tol:
            break
        c = math.cos(tn) * c + math.sin(tn) * tangent / tn
        length = norm(c)
        if length > tol:
            c = c / length
    out = [0.0] * k
    for j, i in enumerate(valid):
        out[i] = scale * float(c[j]) / float(norms[i])
    return out


def prepare(_base: torch.Tensor | None, tensors: Sequence[torch.Tensor], **given: Any) -> KarcherState:
    """The statistics pass: the Gram matrix of the inputs, then the iteration.

    Raises:
        MergeError: an argument karcher does not take.
    """
    kw = bind(_NAME, _PARAMS, given, len(tensors))
    if len(tensors) == 1:
        return KarcherState((1.0,))  # the mean of one model is the model (no pass needed)
    return KarcherState(tuple(karcher_coefficients(gram(tensors), int(kw["max_iter"]), float(kw["tol"]))))


def apply(
    _base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    *,
    state: KarcherState,
    offset: int,
    out: torch.Tensor | None = None,
    **given: Any,
) -> torch.Tensor:
    """``Σ aj θj`` on one row block (``out`` receives it when given).

    Raises:
        MergeError: an argument karcher does not take.
    """
    del offset  # the coefficients are the same for every block
    bind(_NAME, _PARAMS, given, len(tensors))
    return weighted_sum(None, tensors, state.coeffs, out=out)


def karcher(
    base: torch.Tensor | None, tensors: Sequence[torch.Tensor], *, max_iter: int = 10, tol: float = 1e-5
) -> torch.Tensor:
    """Karcher mean of the inputs on the unit sphere, times their mean norm (see :func:`karcher_coefficients`).

    Args:
        base: unused (every model is a term).
        tensors: θi, shape ``S``, any float dtype.
        max_iter: most fixed-point iterations.
        tol: convergence threshold, and the norm below which an input is left out.

    Returns:
        fp32 tensor of shape ``S``.
    """
    return on_whole_tensor(prepare, apply, base, tensors, max_iter=max_iter, tol=tol)


register_method(
    name=_NAME,
    reference="https://arxiv.org/abs/2603.04972",
    formula="ui = θi/|θi|; m = argmin Σ αi d(m, ui)² on the sphere (fixed point: m <- exp_m(Σ αi log_m ui)), "
    "αi = 1/k; θ = (Σ |θi|/k) m",
    params=_PARAMS,
    base="none",
    chunked=ChunkedForm(prepare, apply, takes_out=True),
)(karcher)
