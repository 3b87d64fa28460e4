"""Merge recipes: mergekit's YAML schema, validated with pydantic (unknown keys are errors).

Accepted (as mergekit users write it)::

    merge_method: ties
    base_model: path/to/base            # optional for some methods
    models:                             # or slices:, not both
      - model: path/to/ft1              # "path+adapter_dir" applies a PEFT LoRA on the fly
        parameters: {weight: 0.5, density: [1.0, 0.5, 0.3]}
    slices:
      - sources:
          - {model: a, layer_range: [0, 16], parameters: {...}}
        base_model: ...                 # per-slice base (optional)
        parameters: {...}
    parameters: {normalize: true, int8_mask: true}
    dtype: bfloat16                     # inputs are rounded to it before merging (mergekit's meaning)
    out_dtype: bfloat16                 # stored dtype of the output
    tokenizer_source: base | union | <model>

A parameter value is a scalar, a list (a *gradient*, interpolated across the layers of a slice), or
a list of ``{filter: substring, value: ...}`` entries (first match wins; no filter matches all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from lmbricks.config import load_yaml, show_value, suggest, validate
from lmbricks.errors import ConfigError

Scalar = bool | int | float | str
ScalarOrGradient = Scalar | list[Scalar]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Conditional(_Strict):
    """One ``{filter, value}`` entry: applies to tensors whose name contains ``filter``."""

    value: ScalarOrGradient
    filter: str | None = None


Setting = Conditional | list[Conditional] | ScalarOrGradient
Parameters = dict[str, Setting]


class InputModel(_Strict):
    """An entry of ``models:``."""

    model: str
    parameters: Parameters | None = None


class InputSlice(_Strict):
    """A source of an output slice: layers ``[start, end)`` of ``model``."""

    model: str
    layer_range: tuple[int, int]
    parameters: Parameters | None = None

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] <= v[0]:
            raise ValueError(f"layer_range {list(v)} must satisfy 0 <= start < end")
        return v


class OutputSlice(_Strict):
    """An entry of ``slices:``: layers merged from its sources, appended to the output."""

    sources: list[InputSlice]
    base_model: str | None = None
    residual_weight: float | None = None
    parameters: Parameters | None = None

    @model_validator(mode="after")
    def _same_length(self) -> OutputSlice:
        lengths = {s.layer_range[1] - s.layer_range[0] for s in self.sources}
        if not self.sources:
            raise ValueError("a slice needs at least one source")
        if len(lengths) > 1:
            raise ValueError(f"all sources of a slice must span the same number of layers, got {sorted(lengths)}")
        if self.residual_weight is not None:
            raise ValueError("residual_weight is not supported by lmbricks")
        return self


DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


class Recipe(_Strict):
    """A validated merge recipe (mergekit schema; see the module docstring)."""

    merge_method: str
    base_model: str | None = None
    models: list[InputModel] | None = None
    slices: list[OutputSlice] | None = None
    parameters: Parameters | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    name: str | None = None

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}; use one of {', '.join(DTYPES)}")
        return DTYPES[v]

    @model_validator(mode="after")
    def _one_layout(self) -> Recipe:
        if bool(self.models) == bool(self.slices):
            raise ValueError("exactly one of 'models' or 'slices' must be given (and non-empty)")
        if self.chat_template is not None:
            raise ValueError("chat_template is not supported by lmbricks (the tokenizer is copied as is)")
        return self

    def referenced_models(self) -> list[str]:
        """Every model reference, base first, without duplicates, in recipe order."""
        refs: list[str] = []
        if self.base_model:
            refs.append(self.base_model)
        for m in self.models or []:
            refs.append(m.model)
        for s in self.slices or []:
            if s.base_model:
                refs.append(s.base_model)
            refs.extend(src.model for src in s.sources)
        return list(dict.fromkeys(refs))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


#: mergekit keys lmbricks knows but does not implement (refused with this reason, not as typos).
UNSUPPORTED = {
    "tokenizer": "mergekit's tokenizer section is not supported by lmbricks; use tokenizer_source (base, union "
    "or a model)",
    "modules": "mergekit's per-module recipes are not supported by lmbricks; use slices",
}


def _check_settings(params: Any, where: str) -> None:
    """Shape of a ``parameters`` mapping, checked before pydantic so the message says what is allowed."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: must be a mapping of parameter names to values, got {show_value(params)}")
    allowed = "a number, boolean or string, a list of numbers (a gradient) or a list of {filter, value} entries"
    for name, setting in params.items():
        entries = setting if isinstance(setting, list) else [setting]
        for i, entry in enumerate(entries):
            at = f"{where}.{name}" + (f"[{i}]" if isinstance(setting, list) else "")
            if isinstance(entry, dict):
                for key in entry:
                    if key not in ("filter", "value"):
                        raise ConfigError(
                            f"{at}: unknown key {key!r} in a filter entry{suggest(str(key), ['filter', 'value'])}; "
                            "an entry is {filter: substring, value: ...}"
                        )
                if "value" not in entry:
                    raise ConfigError(f"{at}: a filter entry needs a value ({{filter: substring, value: ...}})")
            value = entry.get("value") if isinstance(entry, dict) else entry
            if value is None or isinstance(value, dict):
                raise ConfigError(f"{at}: must be {allowed}, got {show_value(entry)}")


def _scopes(data: dict[str, Any]) -> list[tuple[Any, str]]:
    """Every ``parameters`` mapping of a raw recipe with its key path."""
    scopes: list[tuple[Any, str]] = [(data.get("parameters"), "parameters")]
    for i, m in enumerate(data.get("models") or []) if isinstance(data.get("models"), list) else []:
        if isinstance(m, dict):
            scopes.append((m.get("parameters"), f"models[{i}].parameters"))
    for i, sl in enumerate(data.get("slices") or []) if isinstance(data.get("slices"), list) else []:
        if isinstance(sl, dict):
            scopes.append((sl.get("parameters"), f"slices[{i}].parameters"))
            for j, src in enumerate(sl.get("sources") or []) if isinstance(sl.get("sources"), list) else []:
                if isinstance(src, dict):
                    scopes.append((src.get("parameters"), f"slices[{i}].sources[{j}].parameters"))
    return scopes


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict (already parsed YAML).

    Every number in it must be finite (``weight: .inf`` and ``.nan`` are refused here, naming the key);
    unknown keys are refused with the nearest valid one (:func:`lmbricks.config.validate`).

    Raises:
        ConfigError: naming the field at fault, e.g. ``recipe.yaml: unknown key 'models[0].paramters'
            (did you mean 'models[0].parameters'?)``.
    """
    if isinstance(data, dict):
        try:
            for key, reason in UNSUPPORTED.items():
                if key in data:
                    raise ConfigError(f"{key}: {reason}")
            for params, where in _scopes(data):
                _check_settings(params, where)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return validate(Recipe, data, source, what="recipe")


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file.

    Raises:
        ConfigError: unreadable file, bad YAML, or a schema error naming the field.
    """
    return parse_recipe(load_yaml(path), str(path))
