"""The search space: free recipe parameters <-> a vector of numbers (pure functions, no I/O).

A :class:`Dimension` is one number of the search: parameter ``parameter`` of ``models[model]``,
over the whole model or over the layer group ``[start, end)``. A point is one value per dimension;
:func:`to_recipe` writes it into the recipe (a scalar, or for layer groups a list of
``{filter: "model.layers.L.", value}`` entries, first match wins, ending with a catch-all entry for
the tensors outside every group) and :func:`from_recipe` reads it back. The optimiser works in the
unit cube: :func:`to_unit` / :func:`from_unit` map each dimension's ``[low, high]`` onto ``[0, 1]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmbricks.errors import ConfigError
from lmbricks.merge.evolve.config import FreeParam
from lmbricks.merge.recipe import Recipe, parse_recipe
from lmbricks.merge.registry import get_method


@dataclass(frozen=True)
class Dimension:
    """One searched number.

    Attributes:
        model: index into the recipe's ``models:``.
        parameter: the per-model parameter (``weight``, ``density``).
        low: smallest value.
        high: largest value.
        layers: the layer group ``(start, end)``, or None for the whole model.
    """

    model: int
    parameter: str
    low: float
    high: float
    layers: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        """``models[0].weight`` or ``models[0].density@layers[0:15)``."""
        group = f"@layers[{self.layers[0]}:{self.layers[1]})" if self.layers else ""
        return f"models[{self.model}].{self.parameter}{group}"


def layer_filter(layer: int) -> str:
    """The substring that picks the tensors of one layer (``model.layers.3.`` never matches layer 30)."""
    return f"model.layers.{layer}."


def dimensions(recipe: Recipe, free: Sequence[FreeParam], n_layers: int | None = None) -> list[Dimension]:
    """The dimensions named by ``free`` over ``recipe``, in order (free entry, then model, then group).

    Args:
        recipe: a recipe with a ``models:`` list.
        free: the free parameters of the config.
        n_layers: the models' layer count, to check the layer groups (None: unchecked).

    Returns:
        One :class:`Dimension` per searched number.

    Raises:
        ConfigError: naming ``free[k]`` for a parameter the method does not take per model, a model
            index out of range, a group past the last layer, or the same number searched twice.
    """
    if not recipe.models:
        raise ConfigError("recipe: merge evolve searches a recipe with a models: list (slices: are not supported)")
    per_input = {p.name for p in get_method(recipe.merge_method).params if p.per_input}
    dims: list[Dimension] = []
    owner: dict[tuple[int, str], int] = {}
    for k, fp in enumerate(free):
        at = f"free[{k}]"
        if fp.parameter not in per_input:
            raise ConfigError(
                f"{at}.parameter: {fp.parameter!r} is not a per-model parameter of merge_method "
                f"{recipe.merge_method!r}; it takes: {', '.join(sorted(per_input)) or 'none'}"
            )
        indices = fp.models if fp.models is not None else _non_base(recipe)
        for i in indices:
            if not 0 <= i < len(recipe.models):
                raise ConfigError(
                    f"{at}.models: index {i} is out of range (the recipe has {len(recipe.models)} models)"
                )
        for start, end in fp.layers or []:
            if n_layers is not None and end > n_layers:
                raise ConfigError(f"{at}.layers: group [{start}, {end}) goes past the models' {n_layers} layers")
        for i in indices:
            if (i, fp.parameter) in owner:
                raise ConfigError(
                    f"{at}: models[{i}].{fp.parameter} is already searched by free[{owner[i, fp.parameter]}]"
                )
            owner[i, fp.parameter] = k
            groups: list[tuple[int, int] | None] = list(fp.layers) if fp.layers else [None]
            dims += [Dimension(i, fp.parameter, fp.low, fp.high, g) for g in groups]
    return dims


def _non_base(recipe: Recipe) -> list[int]:
    assert recipe.models is not None
    return [i for i, m in enumerate(recipe.models) if m.model != recipe.base_model]


def to_recipe(recipe: Recipe, dims: Sequence[Dimension], values: Sequence[float]) -> Recipe:
    """The recipe with each dimension set to its value.

    Args:
        recipe: the base recipe (unchanged).
        dims: from :func:`dimensions`.
        values: one number per dimension.

    Returns:
        A new, validated :class:`Recipe`.
    """
    if len(values) != len(dims):
        raise ConfigError(f"a point has {len(values)} values for {len(dims)} dimensions")
    data = copy.deepcopy(recipe.to_dict())
    grouped: dict[tuple[int, str], list[tuple[Dimension, float]]] = {}
    for d, v in zip(dims, values, strict=True):
        grouped.setdefault((d.model, d.parameter), []).append((d, float(v)))
    for (i, name), entries in grouped.items():
        params = data["models"][i].setdefault("parameters", {})
        if entries[0][0].layers is None:
            params[name] = entries[0][1]
            continue
        filters: list[dict[str, Any]] = []
        for d, v in entries:
            assert d.layers is not None
            filters += [{"filter": layer_filter(layer), "value": v} for layer in range(*d.layers)]
        filters.append({"value": entries[0][1]})  # tensors outside every group: the first group's value
        params[name] = filters
    return parse_recipe(data, "evolved recipe")


def from_recipe(recipe: Recipe, dims: Sequence[Dimension]) -> list[float]:
    """Read each dimension's value from ``recipe`` (the inverse of :func:`to_recipe`).

    A parameter the recipe leaves unset takes the method's default, else the middle of
    ``[low, high]``; a scalar applies to every layer group.

    Raises:
        ConfigError: a value outside ``[low, high]``, or a setting that is not a number or the
            filter entries :func:`to_recipe` writes (a gradient cannot be searched), naming it.
    """
    assert recipe.models is not None
    defaults = {p.name: p.default for p in get_method(recipe.merge_method).params}
    out: list[float] = []
    for d in dims:
        at = f"recipe models[{d.model}].parameters.{d.parameter}"
        setting = (recipe.models[d.model].parameters or {}).get(d.parameter)
        value = _read_setting(setting, d, at)
        if value is None:
            default = defaults.get(d.parameter)
            value = float(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else None
        if value is None:
            value = (d.low + d.high) / 2
        if not d.low <= value <= d.high:
            raise ConfigError(f"{at}: the starting value {value} lies outside the searched [{d.low}, {d.high}]")
        out.append(value)
    return out


def _read_setting(setting: Any, d: Dimension, at: str) -> float | None:
    """The number a setting gives dimension ``d`` (None: unset)."""
    if setting is None:
        return None
    if isinstance(setting, (int, float)) and not isinstance(setting, bool):
        return float(setting)
    entries = setting if isinstance(setting, list) else [setting]
    if d.layers is not None and all(hasattr(e, "value") for e in entries):
        want = layer_filter(d.layers[0])
        for e in entries:
            if e.filter in (want, None, "*") and isinstance(e.value, (int, float)):
                return float(e.value)
    raise ConfigError(f"{at}: a searched parameter starts from a number, got {setting!r}")


def to_unit(dims: Sequence[Dimension], values: Sequence[float]) -> list[float]:
    """Each value as its position in ``[low, high]`` (0 at low, 1 at high)."""
    return [(v - d.low) / (d.high - d.low) for d, v in zip(dims, values, strict=True)]


def from_unit(dims: Sequence[Dimension], unit: Sequence[float]) -> list[float]:
    """The inverse of :func:`to_unit`, clipped to ``[low, high]``."""
    return [min(max(d.low + float(u) * (d.high - d.low), d.low), d.high) for d, u in zip(dims, unit, strict=True)]
