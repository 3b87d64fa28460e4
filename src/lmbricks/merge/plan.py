"""Per-tensor planning of a merge: which inputs feed each output tensor, with which parameters.

Everything here reads configs, tokenizers and safetensors headers only, never tensor data, so
every mistake in a recipe (unknown method or parameter, missing tensor, mismatched shapes or
architectures, layer range past the end, adapter for another base, existing output) is reported
before anything is written. The maths lives in :mod:`lmbricks.merge.methods`; the streaming in
:mod:`lmbricks.merge.executor`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmbricks.checkpoint import tensor_role
from lmbricks.errors import ConfigError
from lmbricks.merge.inputs import ModelInput, open_input
from lmbricks.merge.params import resolve
from lmbricks.merge.recipe import InputSlice, OutputSlice, Parameters, Recipe
from lmbricks.merge.registry import MethodInfo, get_method
from lmbricks.merge.vocab import VOCAB_TENSORS, VocabPlan, build_vocab

_ARCH_FIELDS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")

Scope = tuple[Parameters | None, str]


@dataclass(frozen=True)
class TensorPlan:
    """How to compute one output tensor.

    Attributes:
        name: output tensor name.
        shape: output shape.
        base: ``(model key, tensor name)`` of θ0, or None.
        terms: ``(model key, tensor name)`` of each term θi (non-base inputs; every input for
            methods that use no base).
        kwargs: the method's keyword arguments (per-input lists aligned with ``terms``).
        seed: per-recipe seed for stochastic methods (None otherwise).
        vocab: rows follow the vocabulary (re-mapped when ``tokenizer_source`` is set).
    """

    name: str
    shape: tuple[int, ...]
    base: tuple[str, str] | None
    terms: tuple[tuple[str, str], ...]
    kwargs: dict[str, Any]
    seed: int | None = None
    vocab: bool = False


@dataclass
class MergePlan:
    """A validated merge, ready for :func:`lmbricks.merge.executor.execute`."""

    recipe: Recipe
    method: MethodInfo
    inputs: dict[str, ModelInput]
    tensors: list[TensorPlan]
    out_config: dict[str, Any]
    in_dtype: torch.dtype | None
    out_dtype: torch.dtype
    vocab: VocabPlan | None
    tokenizer_from: str
    extra_inputs: list[Path] = field(default_factory=list)

    def input_paths(self) -> dict[str, Path]:
        """Every path the merge reads (models, adapters, the recipe file): the output keeps apart."""
        found: dict[str, Path] = {}
        for key, m in self.inputs.items():
            found[f"model {key}"] = m.path
            if m.adapter is not None:
                found[f"adapter of {key}"] = m.adapter.path
        for p in self.extra_inputs:
            found[str(p)] = p
        return found


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def check_param_names(recipe: Recipe, method: MethodInfo) -> None:
    """Refuse a parameter name ``method`` does not take, anywhere in ``recipe`` (top level, models, slices).

    Raises:
        ConfigError: naming the scope (``slices[0].sources[1].parameters``) and the unknown name.
    """
    known = {p.name for p in method.params}
    scopes: list[tuple[Parameters | None, str]] = [(recipe.parameters, "parameters")]
    for i, m in enumerate(recipe.models or []):
        scopes.append((m.parameters, f"models[{i}].parameters"))
    for i, s in enumerate(recipe.slices or []):
        scopes.append((s.parameters, f"slices[{i}].parameters"))
        for j, src in enumerate(s.sources):
            scopes.append((src.parameters, f"slices[{i}].sources[{j}].parameters"))
    for params, where in scopes:
        for name in params or {}:
            if name not in known:
                raise ConfigError(
                    f"{where}.{name}: unknown parameter for merge_method {method.name!r}; "
                    f"it accepts: {', '.join(sorted(known)) or 'none'}"
                )


def _open_all(recipe: Recipe, allow_pickle: bool | None) -> dict[str, ModelInput]:
    inputs = {ref: open_input(ref, allow_pickle) for ref in recipe.referenced_models()}
    first = next(iter(inputs.values()))
    for m in inputs.values():
        if m.arch != first.arch:
            raise ConfigError(f"architectures differ: {first.key} is {first.arch}, {m.key} is {m.arch}")
        for f in _ARCH_FIELDS:
            a, b = first.config.get(f), m.config.get(f)
            if a != b:
                raise ConfigError(f"models {first.key} and {m.key} differ in {f}: {a} vs {b}")
    return inputs


def _normalised_slices(recipe: Recipe, inputs: dict[str, ModelInput]) -> list[OutputSlice]:
    if recipe.slices:
        return list(recipe.slices)
    assert recipe.models is not None
    sources = []
    for m in recipe.models:
        sources.append(InputSlice(model=m.model, layer_range=(0, inputs[m.model].num_layers), parameters=m.parameters))
    if recipe.base_model and recipe.base_model not in [m.model for m in recipe.models]:
        sources.append(InputSlice(model=recipe.base_model, layer_range=(0, inputs[recipe.base_model].num_layers)))
    lengths = {s.model: s.layer_range[1] for s in sources}
    if len(set(lengths.values())) > 1:
        raise ConfigError(
            "models: all models must have the same number of layers (use slices: for frankenmerges); got "
            + ", ".join(f"{k}: {v}" for k, v in lengths.items())
        )
    return [OutputSlice(sources=sources)]


def _check_layer_ranges(slices: list[OutputSlice], opened: dict[str, ModelInput]) -> None:
    for si, s in enumerate(slices):
        for j, src in enumerate(s.sources):
            n_layers = opened[src.model].num_layers
            if src.layer_range[1] > n_layers:
                raise ConfigError(
                    f"slices[{si}].sources[{j}].layer_range {list(src.layer_range)}: model {src.model} "
                    f"has only {n_layers} layers"
                )


def _where_source(recipe: Recipe, si: int, j: int) -> str:
    if recipe.models is not None:
        return f"models[{j}].parameters" if j < len(recipe.models) else "base_model"
    return f"slices[{si}].sources[{j}].parameters"


def _count_error(method: MethodInfo, n: int, where: str, base_key: str | None) -> ConfigError:
    """The error for ``n`` models where ``method`` takes another number (``base_key``: the base in the slice)."""
    if method.max_models is None:
        bound = f"at least {method.min_models}"
    elif method.max_models == method.min_models:
        bound = f"exactly {method.min_models}"
    else:
        bound = f"{method.min_models} to {method.max_models}"
    besides = " besides the base model" if method.base != "none" else ""
    note = f" (an entry that is the base model {base_key} counts as the base)" if base_key is not None else ""
    return ConfigError(f"merge_method {method.name!r} takes {bound} model(s){besides}, got {n}{where}{note}")


@dataclass(frozen=True)
class _Planner:
    """Plans one output tensor at a time against the opened inputs."""

    recipe: Recipe
    method: MethodInfo
    opened: dict[str, ModelInput]
    vocab: VocabPlan | None

    def tensor(self, si: int, out_slice: OutputSlice, out_name: str, in_names: list[str], t: float) -> TensorPlan:
        """The plan of output ``out_name`` from ``in_names`` (one per source of ``out_slice``) at gradient ``t``."""
        keys = [s.model for s in out_slice.sources]
        base_idx, term_idx = self._roles(si, out_slice, keys)
        shape = self._shape(keys, in_names, out_name)
        kwargs, seed = self._kwargs(si, out_slice, term_idx, in_names, out_name, t)
        return TensorPlan(
            name=out_name,
            shape=shape,
            base=(keys[base_idx], in_names[base_idx]) if base_idx is not None else None,
            terms=tuple((keys[j], in_names[j]) for j in term_idx),
            kwargs=kwargs,
            seed=seed,
            vocab=out_name in VOCAB_TENSORS,
        )

    def _roles(self, si: int, out_slice: OutputSlice, keys: list[str]) -> tuple[int | None, list[int]]:
        """Index of the base among the slice's sources (or None) and of the terms; checks their number."""
        method = self.method
        base_key = out_slice.base_model or self.recipe.base_model
        if method.base == "none":
            base_idx = None
        else:
            base_idx = keys.index(base_key) if base_key in keys else None
            if base_idx is None and method.base == "required":
                what = f"base model {base_key!r} is not a source of slices[{si}]" if base_key else "no base_model"
                raise ConfigError(f"merge_method {method.name!r} needs a base model: {what}")
        term_idx = [j for j in range(len(keys)) if j != base_idx]
        n = len(term_idx)
        if n < method.min_models or (method.max_models is not None and n > method.max_models):
            where = f" in slices[{si}]" if self.recipe.slices else ""
            raise _count_error(method, n, where, base_key if base_idx is not None else None)
        return base_idx, term_idx

    def _shape(self, keys: list[str], in_names: list[str], out_name: str) -> tuple[int, ...]:
        """The output shape; the inputs must agree (vocabulary rows aside, with ``tokenizer_source``).

        A missing ``lm_head.weight`` is read from the tied embedding (``in_names`` is updated).
        """
        shapes = []
        for j, key in enumerate(keys):
            m = self.opened[key]
            if in_names[j] not in m.reader:
                if in_names[j] == "lm_head.weight" and "model.embed_tokens.weight" in m.reader:
                    in_names[j] = "model.embed_tokens.weight"  # tied embeddings
                else:
                    raise ConfigError(f"model {key}: tensor {in_names[j]!r} missing (needed for output {out_name!r})")
            shapes.append(m.shape(in_names[j]))
        is_vocab = out_name in VOCAB_TENSORS
        if is_vocab and self.vocab is not None:
            shape = (self.vocab.size, *shapes[0][1:])
            bad = [(keys[j], s) for j, s in enumerate(shapes) if s[1:] != shapes[0][1:]]
        else:
            shape = shapes[0]
            bad = [(keys[j], s) for j, s in enumerate(shapes) if s != shapes[0]]
        if bad:
            hint = " (vocabulary sizes differ: set tokenizer_source)" if is_vocab else ""
            raise ConfigError(
                f"tensor {out_name!r}: shapes differ: {keys[0]} has {shapes[0]}, {bad[0][0]} has {bad[0][1]}{hint}"
            )
        return tuple(shape)

    def _kwargs(
        self, si: int, out_slice: OutputSlice, term_idx: list[int], in_names: list[str], out_name: str, t: float
    ) -> tuple[dict[str, Any], int | None]:
        """The method's keyword arguments for one tensor (per-input lists follow ``term_idx``) and the seed."""
        recipe, method = self.recipe, self.method
        shared_scopes: list[Scope] = [(recipe.parameters, "parameters")]
        if recipe.slices is not None:
            shared_scopes.insert(0, (out_slice.parameters, f"slices[{si}].parameters"))
        kwargs: dict[str, Any] = {}
        seed = None
        for p in method.params:
            if p.per_input:
                kwargs[p.kwarg] = [
                    resolve(
                        p,
                        [(out_slice.sources[j].parameters, _where_source(recipe, si, j)), *shared_scopes],
                        in_names[j],
                        t,
                    )
                    for j in term_idx
                ]
            elif p.name == "seed":
                seed = int(resolve(p, shared_scopes, out_name, t))
            else:
                kwargs[p.kwarg] = resolve(p, shared_scopes, out_name, t)
        if method.check is not None and (problem := method.check(kwargs)) is not None:
            raise ConfigError(f"merge_method {method.name!r}, tensor {out_name!r}: {problem}")
        return kwargs, seed


def _plan_tensors(planner: _Planner, slices: list[OutputSlice], ref: ModelInput) -> tuple[list[TensorPlan], int]:
    """Every output tensor in order (embeddings, the slices' layers, the rest) and the output layer count."""
    non_layer = [k for k in ref.reader if tensor_role(ref.arch, k).layer is None]
    pre = [k for k in non_layer if tensor_role(ref.arch, k).kind == "embedding"]
    post = [k for k in non_layer if k not in pre]
    tensors = [planner.tensor(0, slices[0], name, [name] * len(slices[0].sources), 0.0) for name in pre]
    out_layer = 0
    for si, s in enumerate(slices):
        n = s.sources[0].layer_range[1] - s.sources[0].layer_range[0]
        base_key = s.base_model or planner.recipe.base_model
        lead = next((src for src in s.sources if src.model == base_key), s.sources[0])
        lead_model = planner.opened[lead.model]
        for idx in range(n):
            t = idx / (n - 1) if n > 1 else 1.0
            prefix = f"model.layers.{lead.layer_range[0] + idx}."
            for suffix in [k[len(prefix) :] for k in lead_model.reader if k.startswith(prefix)]:
                in_names = [f"model.layers.{src.layer_range[0] + idx}.{suffix}" for src in s.sources]
                tensors.append(planner.tensor(si, s, f"model.layers.{out_layer}.{suffix}", in_names, t))
            out_layer += 1
    last = slices[-1]
    tensors += [planner.tensor(len(slices) - 1, last, name, [name] * len(last.sources), 0.0) for name in post]
    return tensors, out_layer


def _stored_dtype(ref: ModelInput) -> torch.dtype:
    """The dtype the reference model stores its embedding in (else its first tensor)."""
    role = tensor_role
    embedding = (k for k in ref.reader if role(ref.arch, k).layer is None and role(ref.arch, k).kind == "embedding")
    return ref.reader.info(next(embedding, ref.reader.keys()[0])).dtype


def _out_config(
    config: dict[str, Any], n_layers: int, vocab: VocabPlan | None, out_dtype: torch.dtype
) -> dict[str, Any]:
    """The reference model's config with the output's layer count, vocabulary size and dtype."""
    out_config = copy.deepcopy(config)
    out_config["num_hidden_layers"] = n_layers
    if vocab is not None:
        out_config["vocab_size"] = vocab.size
    dtype_key = "dtype" if "dtype" in out_config or "torch_dtype" not in out_config else "torch_dtype"
    out_config[dtype_key] = str(out_dtype).removeprefix("torch.")
    for key in ("layer_types",):  # per-layer lists must follow the new layer count
        if isinstance(out_config.get(key), list) and len(out_config[key]) != n_layers:
            out_config[key] = [out_config[key][i % len(out_config[key])] for i in range(n_layers)]
    return out_config


def plan_merge(
    recipe: Recipe,
    out: str | Path | None = None,
    force: bool = False,
    inputs: Sequence[str | Path] = (),
    allow_pickle: bool | None = None,
) -> MergePlan:
    """Validate ``recipe`` against its inputs (configs and headers only) and plan every output tensor.

    Args:
        recipe: a parsed recipe.
        out: the output directory, checked first by the input guard: refused if it is, contains or
            lies inside an input, or exists (unless ``force`` and lmbricks wrote it).
        force: allow replacing an existing output.
        inputs: more paths the output must keep apart from (the recipe file).
        allow_pickle: read ``.bin`` pickle inputs (weights only); None follows
            :func:`lmbricks.checkpoint.allow_pickles` (default: refuse).

    Returns:
        The :class:`MergePlan`.

    Raises:
        ConfigError / CheckpointError / UnknownNameError: naming the model, tensor or field at fault.
    """
    from lmbricks.checkpoint import check_output
    from lmbricks.hub import reference_paths

    extra = [Path(p) for p in inputs]
    if out is not None:
        refs = [p for ref in recipe.referenced_models() for p in reference_paths(ref)]
        check_output(out, [*extra, *refs], force)
    method = get_method(recipe.merge_method)
    check_param_names(recipe, method)
    opened = _open_all(recipe, allow_pickle)
    slices = _normalised_slices(recipe, opened)
    ref_key = recipe.base_model or slices[0].sources[0].model
    ref = opened[ref_key]
    vocab = None
    if recipe.tokenizer_source is not None:
        vocab = build_vocab(recipe.tokenizer_source, recipe.base_model, {k: m.path for k, m in opened.items()},
                            {k: m.vocab_size for k, m in opened.items()})  # fmt: skip
    _check_layer_ranges(slices, opened)
    tensors, n_layers = _plan_tensors(_Planner(recipe, method, opened, vocab), slices, ref)
    in_dtype = _dtype(recipe.dtype) if recipe.dtype else None
    out_name = recipe.out_dtype or recipe.dtype
    out_dtype = _dtype(out_name) if out_name else _stored_dtype(ref)
    tok_from = recipe.tokenizer_source if recipe.tokenizer_source in opened else ref_key
    config = _out_config(ref.config, n_layers, vocab, out_dtype)
    return MergePlan(recipe, method, opened, tensors, config, in_dtype, out_dtype, vocab, tok_from, extra_inputs=extra)
