"""Recipe graphs: several named merge recipes in one YAML file, a later one using an earlier one's output.

The format is mergekit-multi's: YAML documents separated by ``---``, each a merge recipe plus a
``name:``; a model reference (``base_model``, ``models[i].model``, a slice source, ``tokenizer_source``)
that equals a recipe's name (optionally ``name+adapter_dir``) means that recipe's output. One
document may have no name: the final merge, written where the caller says. ::

    name: zh_math
    merge_method: ties
    base_model: models/base
    models: [{model: models/zh, parameters: {weight: 0.5, density: 0.5}}, ...]
    ---
    name: final
    merge_method: slerp
    base_model: zh_math
    models: [{model: zh_math}, {model: models/code}]
    parameters: {t: 0.3}

Everything here is pure: parse and validate the documents, find the dependencies, order them
(topologically, in file order among equals) and refuse duplicates, bad names and cycles, naming the
recipe and field. Whether the other references exist on disk is the runner's check
(:mod:`lmbricks.merge.multi`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.config import load_yaml_documents, show_value
from lmbricks.errors import ConfigError
from lmbricks.merge.inputs import split_reference
from lmbricks.merge.recipe import Recipe, parse_recipe

#: A recipe's name is a directory name under OUT_DIR: no separators, no ``+`` (the adapter syntax).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: ``tokenizer_source`` values that are not model references.
_TOKENIZER_WORDS = ("base", "union")


@dataclass(frozen=True)
class Reference:
    """One model reference in a recipe.

    Attributes:
        field: its key path (``models[0].model``).
        ref: the reference as written (``stage1`` or ``stage1+adapters/x``).
        node: the recipe of the graph it names, or None (a model outside the graph).
    """

    field: str
    ref: str
    node: str | None


@dataclass(frozen=True)
class GraphRecipe:
    """One recipe of a graph.

    Attributes:
        name: its name (None: the unnamed final merge).
        index: its document's position in the file (0-based, empty documents not counted).
        recipe: the validated recipe as written (references to other recipes by name).
        refs: every model reference, in recipe order.
    """

    name: str | None
    index: int
    recipe: Recipe
    refs: tuple[Reference, ...]

    @property
    def label(self) -> str:
        """``recipe 'a'``, or ``the unnamed recipe (document 3)``: how messages name it."""
        return _label(self.name, self.index)

    @property
    def deps(self) -> tuple[str, ...]:
        """The names of the recipes whose outputs this one reads, without repeats, in recipe order."""
        return tuple(dict.fromkeys(r.node for r in self.refs if r.node is not None))


@dataclass(frozen=True)
class RecipeGraph:
    """A validated graph: its recipes in an order where each comes after the ones it uses."""

    source: str
    recipes: tuple[GraphRecipe, ...]

    def names(self) -> list[str]:
        """The named recipes, in file order."""
        return [r.name for r in sorted(self.recipes, key=lambda r: r.index) if r.name is not None]


def _label(name: str | None, index: int) -> str:
    return f"recipe {name!r}" if name is not None else f"the unnamed recipe (document {index + 1})"


def _reference_fields(recipe: Recipe) -> list[tuple[str, str]]:
    """``(key path, reference)`` of every model reference of ``recipe``."""
    found: list[tuple[str, str]] = []
    if recipe.base_model:
        found.append(("base_model", recipe.base_model))
    for i, m in enumerate(recipe.models or []):
        found.append((f"models[{i}].model", m.model))
    for i, s in enumerate(recipe.slices or []):
        if s.base_model:
            found.append((f"slices[{i}].base_model", s.base_model))
        found.extend((f"slices[{i}].sources[{j}].model", src.model) for j, src in enumerate(s.sources))
    if recipe.tokenizer_source and recipe.tokenizer_source not in _TOKENIZER_WORDS:
        found.append(("tokenizer_source", recipe.tokenizer_source))
    return found


def _name_of(doc: dict[str, Any], where: str) -> str | None:
    if "name" not in doc:
        return None
    name = doc.pop("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"{where}: name must be a directory name (letters, digits, '.', '_', '-'; no '/' or '+'), "
            f"got {show_value(name)}"
        )
    return name


def _documents(docs: list[Any], source: str) -> list[tuple[str | None, dict[str, Any]]]:
    """``(name, recipe dict)`` per non-empty document; duplicate names and a second unnamed one refused."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    seen: dict[str | None, int] = {}
    for doc in (d for d in docs if d is not None):
        where = f"{source}: document {len(out) + 1}"
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: a recipe must be a YAML mapping, got {type(doc).__name__}")
        doc = dict(doc)
        name = _name_of(doc, where)
        if name in seen:
            what = f"duplicate recipe name {name!r}" if name is not None else "a second recipe without a name"
            raise ConfigError(f"{where}: {what} (document {seen[name] + 1} has it); each recipe needs its own name")
        seen[name] = len(out)
        out.append((name, doc))
    if not out:
        raise ConfigError(f"{source}: no recipes (a graph is YAML documents separated by '---', each with a name)")
    return out


def _ordered(recipes: list[GraphRecipe], source: str) -> tuple[GraphRecipe, ...]:
    """Dependency order (file order among the ready ones); a cycle is refused with its path."""
    done: list[GraphRecipe] = []
    names: set[str | None] = set()
    left = list(recipes)
    while left:
        ready = [r for r in left if all(d in names for d in r.deps)]
        if not ready:
            raise ConfigError(f"{source}: {_cycle(left)}")
        done.append(ready[0])
        names.add(ready[0].name)
        left.remove(ready[0])
    return tuple(done)


def _cycle(left: list[GraphRecipe]) -> str:
    """``recipes form a cycle: a (models[0].model) -> b (base_model) -> a`` among recipes none of which is ready."""
    by_name = {r.name: r for r in left}
    path: list[GraphRecipe] = [left[0]]
    while True:
        # every recipe left waits for one that is left too (else it would be ready)
        nxt = next(ref for ref in path[-1].refs if ref.node in by_name)
        target = by_name[nxt.node]
        steps = [f"{r.name} ({next(x.field for x in r.refs if x.node in by_name)})" for r in path]
        if target in path:
            start = path.index(target)
            return "recipes form a cycle: " + " -> ".join([*steps[start:], str(target.name)])
        path.append(target)


def parse_graph(docs: list[Any], source: str = "graph") -> RecipeGraph:
    """Validate a graph given as parsed YAML documents.

    Args:
        docs: one mapping per recipe (``yaml.safe_load_all``); empty documents are skipped.
        source: where the documents came from, first in every message.

    Returns:
        The :class:`RecipeGraph`, its recipes in dependency order.

    Raises:
        ConfigError: a document that is not a valid recipe (naming the recipe and field), a bad or
            duplicate name, two unnamed recipes, or a cycle (naming the recipes and fields in it).
    """
    named = _documents(docs, source)
    names = {n for n, _ in named if n is not None}
    recipes = []
    for index, (name, doc) in enumerate(named):
        recipe = parse_recipe(doc, f"{source}: {_label(name, index)}")
        refs = []
        for field, ref in _reference_fields(recipe):
            model = split_reference(ref)[0] if field != "tokenizer_source" else ref
            refs.append(Reference(field, ref, model if model in names else None))
        recipes.append(GraphRecipe(name, index, recipe, tuple(refs)))
    return RecipeGraph(source, _ordered(recipes, source))


def load_graph(path: str | Path) -> RecipeGraph:
    """Read and validate a graph file (YAML documents separated by ``---``).

    Raises:
        ConfigError: unreadable file, bad YAML (with its line), or as :func:`parse_graph`.
    """
    docs = load_yaml_documents(path)
    return parse_graph(docs, str(path))


def resolve(node: GraphRecipe, outputs: Mapping[str, Path]) -> Recipe:
    """``node``'s recipe with every reference to another recipe replaced by that recipe's output path.

    Args:
        node: a recipe of the graph.
        outputs: output directory of each named recipe.

    Returns:
        A plain recipe that :func:`lmbricks.merge.plan.plan_merge` takes (``name+adapter`` keeps its adapter).
    """
    data = node.recipe.to_dict()
    for ref in node.refs:
        if ref.node is None:
            continue
        adapter = split_reference(ref.ref)[1] if ref.field != "tokenizer_source" else None
        value = str(outputs[ref.node]) + (f"+{adapter}" if adapter is not None else "")
        _set(data, ref.field, value)
    return parse_recipe(data, node.label)


def _set(data: dict[str, Any], field: str, value: str) -> None:
    """Set ``data`` at a key path such as ``slices[1].sources[0].model``."""
    parts = [p for p in re.split(r"\.|\[(\d+)\]", field) if p]
    target: Any = data
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    target[parts[-1]] = value


def recipe_key(recipe: Recipe, dep_keys: Mapping[str, str]) -> str:
    """The hash a re-run compares: the resolved recipe and the keys of the recipes it reads.

    A changed recipe, or a change anywhere upstream of it, changes the key; the content of models
    outside the graph is not part of it.

    Args:
        recipe: the resolved recipe (:func:`resolve`).
        dep_keys: the key of each recipe it reads, by name.

    Returns:
        ``sha256:<hex>``.
    """
    text = json.dumps({"recipe": recipe.to_dict(), "inputs": dict(sorted(dep_keys.items()))}, sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
