"""Resolve recipe parameters for one tensor: filters, layer gradients, precedence, defaults.

Precedence (mergekit's): a source's own ``parameters`` (per-input parameters only), then the
slice's, then the recipe's global ``parameters``, then the method default. Within one setting:
a list of ``{filter, value}`` entries picks the first whose ``filter`` is a substring of the tensor
name (no filter, or ``*``, matches all); a list of numbers is a gradient, interpolated linearly at
``t = layer / (layers_in_slice - 1)`` (``t = 0`` outside the layers, as mergekit does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from lmbricks.config import show_value
from lmbricks.errors import ConfigError
from lmbricks.merge.recipe import Conditional, Setting
from lmbricks.merge.registry import Param, within

_MISSING = object()
_FP32_MAX = 3.4028234663852886e38
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def convert(param: Param, value: Any, where: str) -> Any:
    """Check and convert one recipe value to the parameter's kind.

    Args:
        param: the parameter.
        value: the recipe's value.
        where: the key path of the ``parameters`` mapping it came from (``models[0].parameters``).

    Raises:
        ConfigError: wrong type, a value outside ``choices`` or ``bounds``, or a non-finite number,
            naming ``where.name``.
    """
    at = f"{where}.{param.name}"
    if value is None and param.default is None:
        return None
    kind = param.kind
    ok: bool
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok and isinstance(value, str):
            try:
                value, ok = float(value), True
            except ValueError:
                ok = False
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{at}: must be {_KINDS[kind]}, got {show_value(value)}")
    if param.choices and value not in param.choices:
        raise ConfigError(f"{at}: must be one of {list(param.choices)}, got {show_value(value)}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value) or abs(value) > _FP32_MAX:
            what = "a finite number" if not math.isfinite(value) else "a number within float32 range (|x| < 3.4e38)"
            raise ConfigError(f"{at}: must be {what}, got {show_value(value)}")
    if param.bounds and not within(value, param.bounds):
        raise ConfigError(f"{at}: must lie in {param.bounds}, got {show_value(value)}")
    return value


def evaluate(setting: Setting, tensor_name: str, t: float, param: Param, where: str) -> Any:
    """Value of one setting for ``tensor_name`` at gradient position ``t``.

    Returns ``_MISSING`` if no filter matches."""
    if isinstance(setting, Conditional):
        setting = [setting]
    if isinstance(setting, list):
        if not setting:
            return _MISSING
        if all(isinstance(e, Conditional) for e in setting):
            for cond in setting:
                assert isinstance(cond, Conditional)
                if cond.filter in (None, "*") or cond.filter in tensor_name:
                    return evaluate(cond.value, tensor_name, t, param, where)
            return _MISSING
        if any(isinstance(e, Conditional) for e in setting):
            raise ConfigError(f"{where}.{param.name}: mixes {{filter, value}} entries and plain values")
        values = [convert(param, e, where) for e in setting]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not numeric:
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return convert(param, (1 - frac) * values[i0] + frac * values[i1], where)
    return convert(param, setting, where)


def resolve(
    param: Param,
    scopes: Iterable[tuple[Mapping[str, Setting] | None, str]],
    tensor_name: str,
    t: float,
) -> Any:
    """The value of ``param`` from the first scope (highest precedence first) that sets it.

    Args:
        param: the parameter.
        scopes: ``(parameters mapping or None, description for errors)`` in precedence order.
        tensor_name: matched against filters.
        t: gradient position.

    Raises:
        ConfigError: a required parameter is set nowhere (naming the tensor), or a bad value.
    """
    looked = []
    for scope, where in scopes:
        looked.append(where)
        if scope is not None and param.name in scope:
            value = evaluate(scope[param.name], tensor_name, t, param, where)
            if value is not _MISSING:
                return value
    if param.required:
        raise ConfigError(
            f"required parameter {param.name!r} is not set for tensor {tensor_name!r}; set it in "
            + " or ".join(dict.fromkeys(looked))
        )
    return param.default
