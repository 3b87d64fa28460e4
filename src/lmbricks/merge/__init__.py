"""Merging: mergekit-compatible recipes, pure merge methods, and an out-of-core streaming executor.

Example:
    >>> from lmbricks.merge import merge  # doctest: +SKIP
    >>> merge("recipe.yaml", "out/merged")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from lmbricks.merge.executor import DEFAULT_MAX_MEMORY, DEFAULT_SHARD, ProgressFn, compute_tensor, execute
from lmbricks.merge.plan import MergePlan, TensorPlan, plan_merge
from lmbricks.merge.recipe import Recipe, load_recipe, parse_recipe
from lmbricks.merge.registry import MethodInfo, Param, all_methods, get_method, register_method

__all__ = [
    "MergePlan",
    "MethodInfo",
    "Param",
    "Recipe",
    "TensorPlan",
    "all_methods",
    "compute_tensor",
    "execute",
    "get_method",
    "load_recipe",
    "merge",
    "parse_recipe",
    "plan_merge",
    "register_method",
]


def merge(
    recipe: str | Path | dict | Recipe,
    out: str | Path,
    *,
    force: bool = False,
    max_memory: str | int = DEFAULT_MAX_MEMORY,
    max_shard: str | int = DEFAULT_SHARD,
    on_tensor: ProgressFn | None = None,
    command: str = "lmbricks.merge.merge",
    allow_pickle: bool | None = None,
) -> Path:
    """Validate a recipe against its inputs, then stream the merge into ``out``.

    Args:
        recipe: a YAML file path, a dict, or a :class:`Recipe`.
        out: output directory (refused if it exists, unless ``force``; never an input, inside or
            around one, nor the recipe file).
        force: replace an existing output that lmbricks wrote.
        max_memory: read-ahead and output-queue budget.
        max_shard: largest output shard.
        on_tensor: progress callback ``(tensor name, bytes)``.
        command: recorded in ``lmbricks.json``.
        allow_pickle: read ``.bin`` pickle inputs (weights only); None follows
            :func:`lmbricks.checkpoint.allow_pickles` (default: refuse).

    Returns:
        The output directory.
    """
    parsed, files = _read(recipe)
    plan = plan_merge(parsed, out, force=force, inputs=files, allow_pickle=allow_pickle)
    return execute(
        plan,
        out,
        force=force,
        max_memory=max_memory,
        max_shard=max_shard,
        on_tensor=on_tensor,
        command=command,
    )


def _read(recipe: str | Path | dict | Recipe) -> tuple[Recipe, list[str | Path]]:
    """The parsed recipe, and the file it came from (the output keeps apart from it)."""
    if isinstance(recipe, Recipe):
        return recipe, []
    if isinstance(recipe, dict):
        return parse_recipe(recipe), []
    return load_recipe(recipe), [recipe]
