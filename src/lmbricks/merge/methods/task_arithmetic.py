"""The task-arithmetic family: one method parametrised by sparsifier x sign consensus x defaults.

Every member computes ``θ = θ0 + λ Δ`` from task vectors ``δi = S(θi - θ0)`` (see
:mod:`lmbricks.merge.task_vectors`); they differ only in the sparsifier ``S``, whether signs are
elected (TIES consensus and disjoint merge), and the defaults of ``normalize`` and ``rescale``, as in
mergekit's generalised task arithmetic. The named methods are the rows of :data:`FAMILY`: a new
variant is one more row.

* Sparsifiers with a whole-tensor rank window (none, magnitude top-k, Breadcrumbs' outlier window)
  have a chunked form: a statistics pass per input, then row blocks through the fused kernels.
* The random ones (DARE, DELLA's MagPrune) draw a mask over the whole tensor from the executor's
  per-tensor generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmbricks.merge.registry import ChunkedForm, Param, bind, register_method
from lmbricks.merge.task_vectors import TrimState, apply_trim, combine_deltas, magprune, prepare_trim, random_drop


def common_params(normalize: bool, rescale: bool) -> tuple[Param, ...]:
    """Parameters every member accepts (mergekit's names), with the member's defaults."""
    return (
        Param("weight", float, per_input=True, help="weight of the input's task vector"),
        Param("density", float, per_input=True, default=1.0, help="fraction of the task vector kept", bounds="[0, 1]"),
        Param("lambda", float, default=1.0, help="scale of the merged task vector", arg="lam"),
        Param("normalize", bool, default=normalize, help="divide by the sum of (agreeing) weights"),
        Param("rescale", bool, default=rescale, help="rescale kept entries (see rescale_mode)"),
        Param("int8_mask", bool, default=False, help="mergekit memory option; accepted, no effect here"),
    )


GAMMA = Param("gamma", float, per_input=True, default=0.01, help="fraction of largest |δ| dropped", bounds="[0, 1]")
EPSILON = Param(
    "epsilon", float, per_input=True, default=0.15, help="half-width of the keep-probability range", bounds="[0, 1)"
)
#: lmbricks extension for the random-drop methods: how kept entries are rescaled.
RESCALE_MODE = Param(
    "rescale_mode",
    str,
    default="l1",
    choices=("l1", "inverse"),
    help="l1: match the L1 norm of δ (mergekit); inverse: divide by the keep probability (paper, unbiased)",
)


def check_epsilon(kwargs: dict[str, Any]) -> str | None:
    """Keep probabilities ``density ± epsilon`` must be probabilities (for inputs with density < 1)."""
    for d, e in zip(kwargs.get("density", []), kwargs.get("epsilon", []), strict=False):
        if d < 1 and not (d - e > 0 and d + e < 1):
            return f"density ± epsilon must lie in (0, 1), got density {d} and epsilon {e}"
    return None


@dataclass(frozen=True)
class Sparsifier:
    """How each task vector is thinned: its extra parameters, and whether it draws at random."""

    name: str
    params: tuple[Param, ...] = ()
    stochastic: bool = False
    check: Callable[[dict[str, Any]], str | None] | None = None  # across parameters, for the registry


KEEP = Sparsifier("none")
MAGNITUDE = Sparsifier("magnitude")  # TIES: the top-d fraction by |δ|
OUTLIERS = Sparsifier("outliers", (GAMMA,))  # Breadcrumbs: drop the top γ and the smallest
RANDOM = Sparsifier("random", (RESCALE_MODE,), stochastic=True)  # DARE: Bernoulli(d) mask
MAGPRUNE = Sparsifier("magprune", (EPSILON, RESCALE_MODE), stochastic=True, check=check_epsilon)  # DELLA


@dataclass(frozen=True)
class _Args:
    """One call's parameters, checked by :func:`~lmbricks.merge.registry.bind`."""

    weight: list[float]
    density: list[float]
    lam: float
    normalize: bool
    rescale: bool
    rescale_mode: str
    epsilon: list[float]
    gamma: list[float]


@dataclass(frozen=True)
class TaskArithmetic:
    """One member of the family (a row of :data:`FAMILY`), registered as merge method ``name``."""

    name: str
    sparsifier: Sparsifier
    consensus: bool  # TIES sign election and disjoint merge
    normalize: bool  # default of ``normalize``
    rescale: bool  # default of ``rescale``
    reference: str
    formula: str
    summary: str

    @property
    def params(self) -> tuple[Param, ...]:
        """The recipe parameters (``seed`` is added by the registry for stochastic members)."""
        return (*common_params(self.normalize, self.rescale), *self.sparsifier.params)

    def _args(self, params: dict[str, Any], n: int) -> _Args:
        b = bind(self.name, self.params, params, n)
        return _Args(
            weight=list(b["weight"]),
            density=list(b["density"]),
            lam=float(b["lam"]),
            normalize=bool(b["normalize"]),
            rescale=bool(b["rescale"]),
            rescale_mode=str(b.get("rescale_mode", "l1")),
            epsilon=list(b.get("epsilon", [])),
            gamma=list(b.get("gamma", [])),
        )

    def merge(
        self,
        base: torch.Tensor,
        tensors: Sequence[torch.Tensor],
        *,
        generator: torch.Generator | None = None,
        **params: Any,
    ) -> torch.Tensor:
        """θ = θ0 + λ Δ over ``δi = S(θi - θ0)`` (see the module docstring and ``formula``).

        Args:
            base: θ0, shape ``S``.
            tensors: θi, shape ``S``, any float dtype.
            generator: randomness of the stochastic members (the executor seeds it per tensor).
            **params: the member's parameters by keyword (``weight``, ``density``, ``lam``, ...;
                see :attr:`params`); omitted ones take their defaults, unknown ones are refused.

        Returns:
            fp32 tensor of shape ``S``.

        Raises:
            MergeError: a keyword argument this member does not take, or a missing ``weight``.
        """
        a = self._args(params, len(tensors))
        if not self.sparsifier.stochastic:
            return self._apply(base, tensors, self._prepare(base, tensors, a), 0, a, None)
        b = base.float()
        deltas = []
        for i, t in enumerate(tensors):
            delta = t.float() - b
            if a.density[i] < 1:
                delta = self._drop(delta, i, a, generator)
            deltas.append(delta)
        return combine_deltas(b, deltas, a.weight, consensus=self.consensus, normalize=a.normalize, lam=a.lam)

    def _drop(self, delta: torch.Tensor, i: int, a: _Args, generator: torch.Generator | None) -> torch.Tensor:
        if self.sparsifier is MAGPRUNE:
            return magprune(
                delta, a.density[i], a.epsilon[i], rescale=a.rescale, rescale_mode=a.rescale_mode, generator=generator
            )
        return random_drop(delta, a.density[i], rescale=a.rescale, rescale_mode=a.rescale_mode, generator=generator)

    def _prepare(self, base: torch.Tensor, tensors: Sequence[torch.Tensor], a: _Args) -> list[TrimState]:
        if self.sparsifier is KEEP:
            return [TrimState(None) for _ in tensors]
        gamma = a.gamma if self.sparsifier is OUTLIERS else None
        return prepare_trim(base, tensors, a.density, gamma, a.rescale)

    def _apply(
        self,
        base: torch.Tensor,
        tensors: Sequence[torch.Tensor],
        state: list[TrimState],
        offset: int,
        a: _Args,
        out: torch.Tensor | None,
    ) -> torch.Tensor:
        # plain task arithmetic keeps the eager path: its results stay bit for bit what they were
        fused = self.sparsifier is not KEEP
        return apply_trim(
            base, tensors, state, a.weight, offset=offset, consensus=self.consensus, normalize=a.normalize,
            lam=a.lam, out=out, fused=fused,
        )  # fmt: skip

    def prepare(self, base: torch.Tensor, tensors: Sequence[torch.Tensor], **params: Any) -> list[TrimState]:
        """The chunked form's whole-tensor pass: one :class:`TrimState` per input (see :meth:`merge`)."""
        return self._prepare(base, tensors, self._args(params, len(tensors)))

    def apply(
        self,
        base: torch.Tensor,
        tensors: Sequence[torch.Tensor],
        *,
        state: list[TrimState],
        offset: int,
        out: torch.Tensor | None = None,
        **params: Any,
    ) -> torch.Tensor:
        """The chunked form on one row block at flat ``offset``, written into ``out`` when given.

        Raises:
            MergeError: a keyword argument this member does not take.
        """
        return self._apply(base, tensors, state, offset, self._args(params, len(tensors)), out)

    def register(self) -> None:
        """Register this member with the merge-method registry."""
        chunked = None if self.sparsifier.stochastic else ChunkedForm(self.prepare, self.apply, takes_out=True)
        register_method(
            name=self.name,
            reference=self.reference,
            formula=self.formula,
            summary=self.summary,
            params=self.params,
            stochastic=self.sparsifier.stochastic,
            chunked=chunked,
            check=self.sparsifier.check,
        )(self.merge)


_TIES = "s = sign(Σ wi δi); θ = θ0 + λ Σ[sign(wiδi)=s] wi δi"
_ARXIV = "https://arxiv.org/abs/"

# fmt: off
#: name, sparsifier, consensus, default normalize, default rescale, reference, formula, summary
FAMILY: dict[str, TaskArithmetic] = {row.name: row for row in (
    TaskArithmetic("task_arithmetic", KEEP, False, False, False, _ARXIV + "2212.04089", "θ = θ0 + λ Σ wi (θi - θ0)",
                   "θ = θ0 + λ Σ wi (θi - θ0)  (divided by Σ wi when normalize)."),
    TaskArithmetic("ties", MAGNITUDE, True, True, False, _ARXIV + "2306.01708",
                   "δi = topk_d(θi-θ0); " + _TIES + " / Σ[..] wi",
                   "Keep each task vector's top-density magnitudes, elect the sign of Σ wi δi, average agreeing "
                   "entries."),
    TaskArithmetic("dare_linear", RANDOM, False, False, True, _ARXIV + "2311.03099",
                   "δi = m ⊙ (θi-θ0) · r, m ~ Bernoulli(d), r = |δ|₁/|m⊙δ|₁ (or 1/d); θ = θ0 + λ Σ wi δi",
                   "DARE without sign election: θ = θ0 + λ Σ wi drop_p(θi - θ0)."),
    TaskArithmetic("dare_ties", RANDOM, True, False, True, _ARXIV + "2311.03099", "δi = DARE_d(θi-θ0); " + _TIES,
                   "DARE drop-and-rescale, then TIES sign election and disjoint sum."),
    TaskArithmetic("della", MAGPRUNE, True, True, True, _ARXIV + "2406.11617",
                   "pij = d-ε+2ε·rank(|δij|)/(n-1); δi = m⊙δ·r, m~Bernoulli(p); TIES sign election; θ0 + λΔ",
                   "DELLA: MagPrune each task vector, elect signs, disjoint mean."),
    TaskArithmetic("della_linear", MAGPRUNE, False, False, True, _ARXIV + "2406.11617",
                   "δi = MagPrune_{d,ε}(θi-θ0); θ = θ0 + λ Σ wi δi",
                   "MagPrune each task vector, then θ = θ0 + λ Σ wi δi."),
    TaskArithmetic("breadcrumbs", OUTLIERS, False, False, False, _ARXIV + "2312.06795",
                   "δi = crumbs_{d,γ}(θi-θ0); θ = θ0 + λ Σ wi δi",
                   "θ = θ0 + λ Σ wi crumbs(θi - θ0): keep ranks [n - d·n - γ·n, n - γ·n) of |δ|."),
    TaskArithmetic("breadcrumbs_ties", OUTLIERS, True, False, False, _ARXIV + "2312.06795",
                   "δi = crumbs_{d,γ}(θi-θ0); " + _TIES,
                   "Breadcrumbs trimming, then TIES sign election and disjoint sum (see ``breadcrumbs``)."),
)}
# fmt: on

for _row in FAMILY.values():
    _row.register()
