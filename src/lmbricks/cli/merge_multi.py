"""``lmbricks merge multi``: run a recipe graph (mergekit-multi's format) into OUT_DIR/NAME per recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.common import (
    FORCE_HELP,
    command_line,
    console,
    print_json,
    reads_checkpoints,
    stage_progress,
    user_errors,
)
from lmbricks.cli.options import json_option


@user_errors
@reads_checkpoints
def multi(
    graph: Path = typer.Argument(..., help="YAML documents separated by '---', each a recipe with a name."),
    out_dir: Path = typer.Argument(..., help="Folder that receives NAME/ per named recipe (created if absent)."),
    final_out: Path | None = typer.Option(None, "--out", help="Output of the unnamed recipe, if there is one."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP + " Here: rebuild outputs whose recipe changed."),
    max_memory: str = typer.Option("1GB", "--max-memory", help="Read-ahead and write-queue budget of each merge."),
    max_shard: str = typer.Option("2GB", "--max-shard", help="Largest output shard."),
    validate_only: bool = typer.Option(False, "--validate", help="Check the graph and inputs, write nothing."),
    as_json: bool = json_option("Print the steps as JSON (nothing else on stdout)."),
) -> None:
    """Merge several named recipes where a later one uses an earlier one's output, in dependency order.

    A reference equal to a recipe's name means its output; a re-run skips unchanged recipes.

    Example: lmbricks merge multi graph.yaml out/graph
    """
    from lmbricks.merge.multi import MultiConfig, plan_graph, run_graph

    config = MultiConfig(graph=graph, out_dir=out_dir, final_out=final_out, force=force,
                         max_memory=max_memory, max_shard=max_shard)  # fmt: skip
    if validate_only:
        result = plan_graph(config)[1]
    else:
        with stage_progress("checking the graph") as progress:
            result = run_graph(config, progress, command=command_line())
    if as_json:
        print_json(result.to_dict())
        return
    for s in result.steps:
        verb = {"merge": "would merge" if validate_only else "merged", "skip": "unchanged, skipped"}[s.action]
        console.print(f"{s.name or '(unnamed)'}: {verb} {s.out}", highlight=False, soft_wrap=True)
