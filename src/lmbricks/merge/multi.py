"""Run a recipe graph (:mod:`lmbricks.merge.graph`): each recipe merged into ``OUT_DIR/NAME`` in dependency order.

Everything that can be checked is checked before the first merge: the graph (names, cycles), every
model outside the graph (opened: config and headers), the methods and parameter names of every
recipe, the full plan of every recipe whose inputs all exist, and every output path (apart from
every input, replaceable). A re-run skips a recipe whose output exists and whose key
(:func:`lmbricks.merge.graph.recipe_key`, recorded in ``OUT_DIR/lmbricks-multi.json``) is unchanged;
an output whose recipe changed is refused unless ``force``, which replaces only outputs of the graph
(never an input). Each output is written as ``lmbricks merge`` writes one: into a temporary
directory renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lmbricks.checkpoint import check_apart, check_output
from lmbricks.config import suggest
from lmbricks.errors import ConfigError, LmbricksError
from lmbricks.merge.executor import DEFAULT_MAX_MEMORY, DEFAULT_SHARD, execute
from lmbricks.merge.graph import GraphRecipe, RecipeGraph, load_graph, recipe_key, resolve
from lmbricks.merge.inputs import open_input, split_reference
from lmbricks.merge.plan import check_param_names, plan_merge
from lmbricks.merge.recipe import Recipe
from lmbricks.merge.registry import get_method

#: The record of the keys a graph's outputs were built from, in OUT_DIR.
STATE_FILE = "lmbricks-multi.json"
#: The state-file entry of the unnamed recipe (a name a recipe cannot have).
FINAL = "(final)"

#: ``progress(stage, n)``: a stage of ``n`` tensors starts (a non-empty name), or ``n`` more are done ("").
Progress = Callable[[str, int | None], None]
Action = Literal["merge", "skip"]


class MultiConfig(BaseModel):
    """What ``lmbricks merge multi`` runs.

    Attributes:
        graph: the graph file (YAML documents, each a recipe with a ``name``).
        out_dir: the folder that receives ``NAME/`` per named recipe (created if absent).
        final_out: the output of the unnamed recipe, if the graph has one (required then).
        force: rebuild outputs of the graph whose recipe (or an upstream recipe) changed.
        max_memory: read-ahead and write-queue budget of each merge.
        max_shard: largest output shard.
        allow_pickle: read ``.bin`` pickle inputs (weights only); None: the process default.
    """

    model_config = ConfigDict(extra="forbid")

    graph: Path
    out_dir: Path
    final_out: Path | None = None
    force: bool = False
    max_memory: str = DEFAULT_MAX_MEMORY
    max_shard: str = DEFAULT_SHARD
    allow_pickle: bool | None = None


@dataclass
class Step:
    """One recipe of a run: what was (or will be) done.

    Attributes:
        name: the recipe's name (None: the unnamed final recipe).
        out: its output directory.
        action: ``merge`` (built by this run) or ``skip`` (its output exists with the same key).
        key: its recipe key.
        seconds: wall time of the merge (0 when skipped or only planned).
    """

    name: str | None
    out: Path
    action: Action
    key: str
    seconds: float = 0.0


@dataclass
class MultiResult:
    """The outcome of :func:`run_graph` (or the plan of :func:`plan_graph`): one step per recipe, in run order."""

    graph: Path
    out_dir: Path
    steps: list[Step]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings."""
        steps = [{**asdict(s), "out": str(s.out)} for s in self.steps]
        return {"graph": str(self.graph), "out_dir": str(self.out_dir), "steps": steps}


def _outputs(graph: RecipeGraph, config: MultiConfig) -> dict[str | None, Path]:
    out_dir = config.out_dir.expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"OUT_DIR {config.out_dir}: is a file, expected a folder")
    named: dict[str, Path] = {r.name: out_dir / r.name for r in graph.recipes if r.name is not None}
    outputs: dict[str | None, Path] = {k: v for k, v in named.items()}
    unnamed = [r for r in graph.recipes if r.name is None]
    if unnamed and config.final_out is None:
        raise ConfigError(f"{graph.source}: {unnamed[0].label} needs an output: give --out (mergekit's --out-path)")
    if config.final_out is not None:
        if not unnamed:
            raise ConfigError(f"--out {config.final_out}: is for the unnamed recipe, and {graph.source} has none")
        final = outputs[None] = config.final_out.expanduser().absolute()
        for name, path in named.items():  # compared as paths: neither exists before the run
            if final == path or path in final.parents or final in path.parents:
                raise ConfigError(f"--out {final}: overlaps the output of recipe {name!r} ({path})")
    return outputs


def _check_references(graph: RecipeGraph, node: GraphRecipe, allow_pickle: bool | None) -> list[str]:
    """Open every reference of ``node`` outside the graph; return them. A missing one is refused,
    naming the recipe and field (with the nearest recipe name when it looks like a typo)."""
    found = []
    for ref in node.refs:
        adapter = split_reference(ref.ref)[1] if ref.field != "tokenizer_source" else None
        if ref.node is not None and adapter is not None:  # another recipe's output + an adapter
            if not Path(adapter).expanduser().is_dir():
                raise ConfigError(f"{graph.source}: {node.label}: {ref.field}: adapter directory {adapter!r} not found")
            found.append(adapter)
        if ref.node is not None or (ref.field == "tokenizer_source" and ref.ref in node.recipe.referenced_models()):
            continue
        try:
            open_input(ref.ref, allow_pickle)
        except LmbricksError as exc:
            hint = suggest(ref.ref.split("+")[0], graph.names())
            other = f"; it is no recipe of the graph either{hint}" if hint else ""
            raise type(exc)(f"{graph.source}: {node.label}: {ref.field}: {exc}{other}") from None
        found.append(ref.ref)
    return found


def _check_recipe(graph: RecipeGraph, node: GraphRecipe, resolved: Recipe, ready: bool, pickle: bool | None) -> None:
    """Method and parameter names of every recipe; the full plan if ``ready`` (every input exists)."""
    try:
        method = get_method(resolved.merge_method)
        check_param_names(resolved, method)
        if ready:
            plan_merge(resolved, allow_pickle=pickle)
    except LmbricksError as exc:
        raise type(exc)(f"{graph.source}: {node.label}: {exc}") from None


def _read_state(out_dir: Path) -> dict[str, str]:
    """``{recipe: key}`` recorded by an earlier run (empty when absent or unreadable: nothing is skipped)."""
    try:
        data = json.loads((out_dir / STATE_FILE).read_text(encoding="utf-8"))
        return {str(k): str(v["key"]) for k, v in data["recipes"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_state(out_dir: Path, graph: Path, keys: dict[str, str]) -> None:
    """Replace the state file atomically (a crash leaves the old one or the new one)."""
    record = {"graph": str(graph), "recipes": {k: {"key": v} for k, v in sorted(keys.items())}}
    fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=out_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, out_dir / STATE_FILE)


def plan_graph(config: MultiConfig) -> tuple[dict[str | None, Recipe], MultiResult]:
    """Every check of a run, and what each recipe will do; reads configs and headers only, writes nothing.

    Args:
        config: the run.

    Returns:
        Each recipe resolved (references to other recipes replaced by their output
        paths), and the planned :class:`MultiResult` (``seconds`` all 0).

    Raises:
        ConfigError / CheckpointError / UnknownNameError: naming the recipe and the field, path or
            name at fault.
    """
    graph = load_graph(config.graph)
    outputs = _outputs(graph, config)
    named = {k: v for k, v in outputs.items() if k is not None}
    state = _read_state(config.out_dir.expanduser().absolute())
    externals: list[str] = [str(config.graph)]
    resolved: dict[str | None, Recipe] = {}
    keys: dict[str | None, str] = {}
    steps: list[Step] = []
    for node in graph.recipes:
        externals += _check_references(graph, node, config.allow_pickle)
        resolved[node.name] = resolve(node, named)
        ready = all(s.action == "skip" for s in steps if s.name in node.deps)  # built by an earlier run
        _check_recipe(graph, node, resolved[node.name], ready, config.allow_pickle)
        keys[node.name] = recipe_key(resolved[node.name], {d: keys[d] for d in node.deps})
        out = outputs[node.name]
        same = out.exists() and state.get(node.name or FINAL) == keys[node.name]
        if out.exists() and not same and not config.force:
            raise ConfigError(
                f"{graph.source}: {node.label}: {out} exists and was built from another recipe (or from an "
                "earlier state of a recipe it uses); pass --force to rebuild it"
            )
        steps.append(Step(node.name, out, "skip" if same else "merge", keys[node.name]))
    from lmbricks.hub import reference_paths

    inputs = [p for ref in externals for p in reference_paths(ref)]
    for step in steps:
        where = f"{graph.source}: recipe {step.name!r}" if step.name else f"{graph.source}: --out"
        try:
            check_apart(step.out, inputs) if step.action == "skip" else check_output(step.out, inputs, config.force)
        except LmbricksError as exc:
            raise type(exc)(f"{where}: {exc}") from None
    return resolved, MultiResult(config.graph.expanduser().absolute(), config.out_dir.expanduser().absolute(), steps)


def run_graph(
    config: MultiConfig, progress: Progress | None = None, command: str = "lmbricks.merge.multi"
) -> MultiResult:
    """Check a recipe graph whole (:func:`plan_graph`), then merge its recipes in dependency order.

    Args:
        config: the run.
        progress: ``progress(stage, n)`` callback: a merge of ``n`` tensors starts, or ("", 1) one
            more tensor is written.
        command: recorded in each output's ``lmbricks.json`` (with the recipe's name).

    Returns:
        The :class:`MultiResult`: per recipe, merged or skipped, with its wall time.

    Raises:
        As :func:`plan_graph`, before anything is written; a failed merge leaves the outputs built
        before it (recorded, so a re-run skips them) and nothing of its own.
    """
    resolved, result = plan_graph(config)
    result.out_dir.mkdir(parents=True, exist_ok=True)
    keys = {k: v for k, v in _read_state(result.out_dir).items() if k in {s.name or FINAL for s in result.steps}}
    on_tensor = (lambda _n, _b: progress("", 1)) if progress is not None else None
    for step in result.steps:
        if step.action == "skip":
            continue
        start = time.perf_counter()
        recipe = resolved[step.name]
        plan = plan_merge(recipe, step.out, force=config.force, inputs=[config.graph], allow_pickle=config.allow_pickle)
        if progress is not None:
            progress(f"merging {step.name or 'the final recipe'}", len(plan.tensors))
        label = f" (recipe {step.name})" if step.name else " (unnamed recipe)"
        execute(plan, step.out, force=config.force, max_memory=config.max_memory, max_shard=config.max_shard,
                on_tensor=on_tensor, command=command + label)  # fmt: skip
        step.seconds = time.perf_counter() - start
        keys[step.name or FINAL] = step.key
        _write_state(result.out_dir, result.graph, keys)
    return result
