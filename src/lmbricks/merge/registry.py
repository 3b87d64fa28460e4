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
``apply(prepare(...))`` on the whole tensor; tests check it. ``prepare`` and ``apply`` receive every
parameter of the method and reject any other keyword argument, naming it (:func:`bind`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lmbricks.errors import MergeError, UnknownNameError

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
        """The keyword in the Python call."""
        return self.arg or self.name

    @property
    def label(self) -> str:
        """The name with its interval, as ``lmbricks merge methods`` lists it: ``density in [0, 1]``."""
        return f"{self.name} in {self.bounds}" if self.bounds else self.name

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


def blockwise(name: str, fn: Callable[..., Any], params: tuple[Param, ...], takes_out: bool = False) -> ChunkedForm:
    """The chunked form of an elementwise method, one without whole-tensor statistics: ``fn`` per row block.

    Args:
        name: the method's name (for errors).
        fn: the method's function; with ``takes_out`` it accepts ``out=``.
        params: its parameters: the arguments of both halves are checked against them (:func:`bind`).
        takes_out: pass each block's output rows to ``fn``.

    Returns:
        The :class:`ChunkedForm` (``prepare`` returns None).
    """

    def prepare(_base: Any, tensors: Sequence[Any], **given: Any) -> None:
        bind(name, params, given, len(tensors))

    def apply(base: Any, tensors: Sequence[Any], *, state: None, offset: int, out: Any = None, **given: Any) -> Any:
        del state, offset  # no statistics, and the result does not depend on the block's position
        kwargs = bind(name, params, given, len(tensors))
        return fn(base, tensors, **kwargs, out=out) if takes_out else fn(base, tensors, **kwargs)

    return ChunkedForm(prepare, apply, takes_out)


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
        """The parameter called ``name`` in recipes, or None."""
        for p in self.params:
            if p.name == name:
                return p
        return None

    def to_dict(self) -> dict[str, Any]:
        """The method as ``lmbricks merge methods --json`` prints it."""
        return {
            "name": self.name,
            "reference": self.reference,
            "formula": self.formula,
            "summary": self.summary,
            "base": self.base,
            "parameters": [p.name for p in self.params],
            "parameter_bounds": {p.name: p.bounds for p in self.params if p.bounds},
        }


def bind(method: str, params: Sequence[Param], given: Mapping[str, Any], n_inputs: int) -> dict[str, Any]:
    """Check the keyword arguments of a call to a method's function against its parameters.

    Args:
        method: the method's name (for the error).
        params: its parameters (``seed`` is the executor's and never passed).
        given: the keyword arguments, by :attr:`Param.kwarg`.
        n_inputs: number of input tensors: an omitted per-input parameter gets its default per input.

    Returns:
        Every parameter's value by ``kwarg``, defaults filled in.

    Raises:
        MergeError: an argument the method does not take, or a required one missing, naming them.
    """
    known = {p.kwarg: p for p in params if p.name != "seed"}
    unknown = [k for k in given if k not in known]
    if unknown:
        raise MergeError(
            f"merge_method {method!r} takes no argument {', '.join(map(repr, unknown))}; it takes {', '.join(known)}"
        )
    missing = [k for k, p in known.items() if p.required and k not in given]
    if missing:
        raise MergeError(f"merge_method {method!r} needs {', '.join(map(repr, missing))}")
    defaults = {k: [p.default] * n_inputs if p.per_input else p.default for k, p in known.items()}
    return {**defaults, **given}


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
    summary: str = "",
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
        summary: one line for ``lmbricks merge methods --json`` (default: the first line of
            ``fn``'s docstring).

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
            summary=summary or (doc[0] if doc else ""),
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
    """Every registered method, by name."""
    _load_all()
    return [_METHODS[name] for name in sorted(_METHODS)]


def _load_all() -> None:
    import lmbricks.merge.methods  # noqa: F401  (registers on import)
