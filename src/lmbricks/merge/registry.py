"""The merge-method registry: each method registers itself where it is defined, with its reference.

A method is a pure tensor function::

    fn(base: Tensor | None, tensors: list[Tensor], *, generator: torch.Generator | None, **params) -> Tensor

``tensors`` are the non-base inputs (for methods whose ``base`` policy is ``"none"``, every input),
all of one shape and any floating dtype; the function computes in fp32 and returns fp32. Per-input
parameters (``weight``, ``density``, ...) arrive as lists aligned with ``tensors``; shared parameters
as scalars. Stochastic methods draw only from ``generator``.

A method may also give a *chunked form* (``prepare``/``apply``): ``prepare`` reads the whole tensor
once for global statistics (a magnitude threshold, say) and ``apply`` maps row blocks given those
statistics, so the executor can bound fp32 scratch memory for large tensors. ``fn`` must equal
``apply(prepare(...))`` on the whole tensor; tests check it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lmbricks.errors import UnknownNameError

#: Marks a parameter without default: a recipe must set it.
REQUIRED: Any = object()

BasePolicy = Literal["required", "optional", "none"]


@dataclass(frozen=True)
class Param:
    """One method parameter.

    Attributes:
        name: the key used in recipes (``weight``, ``density``, ``t``...).
        kind: ``float``, ``int``, ``bool`` or ``str``; recipe values are converted and checked.
        per_input: True if each input model has its own value (lists in the call), else shared.
        default: value when the recipe omits it, or :data:`REQUIRED`.
        help: one line for ``lmbricks merge methods`` and the docs.
        choices: allowed values for ``str`` parameters.
        bounds: allowed interval of a number in interval notation, ``"[0, 1]"``, ``"(0, 0.01)"``,
            ``"[0, inf)"`` (checked for every value a recipe gives, gradients and filters included).
    """

    name: str
    kind: type
    per_input: bool = False
    default: Any = REQUIRED
    help: str = ""
    choices: tuple[str, ...] = ()
    arg: str = ""  # keyword name in the Python call when it differs (``lambda`` -> ``lam``)
    bounds: str = ""

    def __post_init__(self) -> None:
        if self.bounds:
            parse_bounds(self.bounds)  # a malformed interval fails at registration, not in a recipe

    @property
    def kwarg(self) -> str:
        return self.arg or self.name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def parse_bounds(text: str) -> tuple[float, float, bool, bool]:
    """``"(0, 1]"`` -> ``(0.0, 1.0, lower included, upper included)``."""
    text = text.strip()
    lo, hi = (float(x) for x in text[1:-1].split(","))
    if text[0] not in "[(" or text[-1] not in ")]" or lo > hi:
        raise ValueError(f"bad interval {text!r}")
    return lo, hi, text[0] == "[", text[-1] == "]"


def within(value: float, bounds: str) -> bool:
    """Whether ``value`` lies in the interval ``bounds`` (see :class:`Param`)."""
    lo, hi, lo_in, hi_in = parse_bounds(bounds)
    return (value > lo or (lo_in and value == lo)) and (value < hi or (hi_in and value == hi))


@dataclass(frozen=True)
class ChunkedForm:
    """Global statistics then a row-block map (see the module docstring)."""

    prepare: Callable[..., Any]
    apply: Callable[..., Any]
    #: ``apply`` accepts ``out=`` (the output rows, in the output dtype) and writes the result there
    takes_out: bool = False


@dataclass(frozen=True)
class MethodInfo:
    """A registered merge method: its function, reference, formula and parameters."""

    name: str
    fn: Callable[..., Any]
    reference: str
    formula: str
    summary: str
    base: BasePolicy
    params: tuple[Param, ...]
    min_models: int = 1
    max_models: int | None = None
    stochastic: bool = False
    chunked: ChunkedForm | None = None
    #: checks that span parameters (``kwargs`` of one tensor -> error message or None)
    check: Callable[[dict[str, Any]], str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


_METHODS: dict[str, MethodInfo] = {}


def register_method(
    *,
    name: str,
    reference: str,
    formula: str,
    params: tuple[Param, ...] = (),
    base: BasePolicy = "required",
    min_models: int = 1,
    max_models: int | None = None,
    stochastic: bool = False,
    chunked: ChunkedForm | None = None,
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as merge method ``name``.

    Args:
        name: the recipe's ``merge_method`` value.
        reference: paper or page (URL) the method comes from.
        formula: the maths in one or two lines of plain text.
        params: the parameters the method accepts.
        base: whether a base model is required, optional, or not used (every input is a term).
        min_models / max_models: bounds on the number of inputs, base excluded (base included
            when ``base == "none"``).
        stochastic: the method draws random numbers (it takes a ``seed`` parameter).
        chunked: optional prepare/apply form used for large tensors.
        check: validates the keyword arguments of one tensor together (``weights sum to zero``);
            returns the problem in words, or None. Runs at planning time, before anything is read.

    Returns:
        The decorator (it returns ``fn`` unchanged).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _METHODS:
            raise ValueError(f"merge method {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        all_params = params
        if stochastic:
            all_params = (*params, Param("seed", int, default=0, help="random seed (lmbricks extension)"))
        _METHODS[name] = MethodInfo(
            name=name,
            fn=fn,
            reference=reference,
            formula=formula,
            summary=doc[0] if doc else "",
            base=base,
            params=all_params,
            min_models=min_models,
            max_models=max_models,
            stochastic=stochastic,
            chunked=chunked,
            check=check,
        )
        return fn

    return deco


def get_method(name: str) -> MethodInfo:
    """The method registered as ``name``.

    Raises:
        UnknownNameError: no such method; the message lists the known ones.
    """
    _load_all()
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise UnknownNameError(f"unknown merge_method {name!r}; known methods: {known}") from None


def all_methods() -> list[MethodInfo]:
    """Every registered method, in registration order."""
    _load_all()
    return list(_METHODS.values())


def _load_all() -> None:
    import lmbricks.merge.methods  # noqa: F401  (registers on import)
