"""``lmbricks merge``: a group whose unknown first word falls through to the default ``merge run``.

``lmbricks merge RECIPE OUT [OPTIONS]`` is ``lmbricks merge run RECIPE OUT [OPTIONS]``; the other
subcommands are listed in :data:`SUBCOMMANDS`. ``lmbricks average`` and ``lmbricks soup`` live in
:mod:`lmbricks.cli.average` (re-exported here for the old import path).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from lmbricks.cli import merge_evolve, merge_multi
from lmbricks.cli.average import average as average
from lmbricks.cli.average import soup as soup
from lmbricks.cli.common import (
    FORCE_HELP,
    command_line,
    console,
    print_json,
    print_list,
    progress_bar,
    reads_checkpoints,
    user_errors,
)
from lmbricks.cli.options import json_option

#: The subcommand that ``lmbricks merge`` runs when its first word names no other subcommand.
DEFAULT_COMMAND = "run"


class _DefaultGroup(TyperGroup):
    """A typer group that runs :data:`DEFAULT_COMMAND` when the first word is not a subcommand name
    (a recipe path, or an option such as ``--force``), so ``lmbricks merge RECIPE OUT`` keeps working."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in self.get_help_option_names(ctx):
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultGroup,
    no_args_is_help=True,
    subcommand_metavar="RECIPE OUT | COMMAND [ARGS]...",
    help="Merge models from mergekit-compatible recipes, list the methods, run recipe graphs.\n\n"
    "lmbricks merge RECIPE OUT [OPTIONS] is short for lmbricks merge run RECIPE OUT [OPTIONS] "
    "(any first word that is not a command below is a recipe).\n\n"
    "Example: lmbricks merge recipe.yaml out/merged --max-memory 1GB",
)


@user_errors
@reads_checkpoints
def run(
    recipe: str = typer.Argument(..., help="mergekit-style YAML recipe."),
    out: Path = typer.Argument(..., help="Output model directory (must not exist)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    max_memory: str = typer.Option("1GB", "--max-memory", help="Read-ahead and write-queue budget."),
    max_shard: str = typer.Option("2GB", "--max-shard", help="Largest output shard."),
    validate_only: bool = typer.Option(False, "--validate", help="Check the recipe and inputs, write nothing."),
) -> None:
    """Merge models from a mergekit-compatible recipe, streaming tensor by tensor (the default subcommand).

    Example: lmbricks merge recipe.yaml out/merged --max-memory 1GB
    """
    from lmbricks.merge import execute, load_recipe, plan_merge

    plan = plan_merge(load_recipe(recipe), out, force=force, inputs=[recipe])
    if validate_only:
        console.print(f"ok: {plan.method.name}, {len(plan.inputs)} inputs, {len(plan.tensors)} tensors")
        return
    with progress_bar() as bar:
        task = bar.add_task("merging", total=len(plan.tensors))
        path = execute(
            plan,
            out,
            force=force,
            max_memory=max_memory,
            max_shard=max_shard,
            on_tensor=lambda _n, _b: bar.advance(task),
            command=command_line(),
        )
    console.print(f"wrote {path}")


def methods(as_json: bool = json_option()) -> None:
    """List the registered merge methods with their parameters, formulas and papers.

    Example: lmbricks merge methods --json
    """
    from lmbricks.merge import all_methods

    found = all_methods()
    if as_json:
        print_json([m.to_dict() for m in found])
        return
    rows = [(m.name, m.base, ", ".join(p.label for p in m.params), m.formula, m.reference) for m in found]
    print_list("merge methods", ("method", "base", "parameters", "formula", "reference"), rows, key="method")


def architectures(as_json: bool = json_option()) -> None:
    """List the architectures merge reads (its architecture map): model types, MoE layout, q/k norms.

    Example: lmbricks merge architectures --json
    """
    from lmbricks.checkpoint.archmap import coverage

    found = coverage()
    if as_json:
        print_json(found)
        return
    yes = {True: "yes", False: "no"}
    rows = [(a["name"], ", ".join(a["model_types"]), ", ".join(a["architectures"]), yes[a["moe"]],
             yes[a["shared_expert"]], yes[a["qk_norm"]]) for a in found]  # fmt: skip
    cols = ("architecture", "model_type", "class", "moe", "shared expert", "q/k norm")
    print_list("merge architectures", cols, rows, key="architecture")


#: ``lmbricks merge NAME``: the registration point of every subcommand, in help order. The search
#: command of the merge-evolve branch (``lmbricks.cli.merge_evolve.evolve``) joins as ``"evolve"``.
SUBCOMMANDS: dict[str, Callable[..., None]] = {
    DEFAULT_COMMAND: run,
    "methods": methods,
    "architectures": architectures,
    "multi": merge_multi.multi,
    "evolve": merge_evolve.evolve,
}

for _name, _fn in SUBCOMMANDS.items():
    app.command(name=_name)(_fn)


def register(root: typer.Typer) -> None:
    """Add the ``merge`` group, ``average`` and ``soup`` to the top-level app."""
    root.add_typer(app, name="merge")
    root.command(name="average")(average)
    root.command(name="soup")(soup)
