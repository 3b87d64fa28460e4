"""``lmbricks adapters plug | unplug | list``: a base model's catalogue of bricks."""

from __future__ import annotations

from pathlib import Path

import typer

from lmbricks.cli.adapters_options import AS_JSON
from lmbricks.cli.common import console, print_json, print_list, reads_checkpoints, user_errors


@user_errors
@reads_checkpoints
def plug(
    brick: Path = typer.Argument(..., help="brick directory"),
    model: str = typer.Option(..., "--model", "-m", help="the base model to plug it into"),
    name: str | None = typer.Option(None, help="catalogue name (default: the brick's name)"),
    force: bool = typer.Option(False, "--force", help="replace an entry of the same name"),
) -> None:
    """Add a brick to a base model's catalogue (refused if it was trained on another base).

    Example: lmbricks adapters plug bricks/smollm2-135m-instruct/zh --model smollm2-135m-instruct --name zh2
    """
    from lmbricks.adapters.catalogue import plug as plug_brick

    entry = plug_brick(brick, model, name=name, force=force)
    console.print(f"plugged {entry.brick.name} into {model}: {entry.brick.path}")


@user_errors
def unplug(
    name: str = typer.Argument(..., help="catalogue name"),
    model: str = typer.Option(..., "--model", "-m", help="the base model"),
) -> None:
    """Remove a plugged brick from a base model's catalogue.

    Example: lmbricks adapters unplug zh2 --model smollm2-135m-instruct
    """
    from lmbricks.adapters.catalogue import unplug as unplug_brick

    console.print(f"removed {unplug_brick(name, model)}")


def _row(r: dict) -> tuple[str, ...]:
    """One table row of ``adapters list``."""
    effect = (
        f"{r['ppl_before']:.3f} -> {r['ppl_after']:.3f} ({100 * r['ppl_change']:+.1f}%)"
        if r["ppl_change"] is not None
        else "-"
    )
    sha = (r["base_sha256"] or "?")[:12]
    targets = ",".join(t.removesuffix("_proj") for t in r["targets"])
    return (r["name"], r["source"], r["domain"] or "-", str(r["rank"]), targets, effect, f"{r['base_model']} ({sha})")


@user_errors
def list_(
    model: str | None = typer.Option(None, "--model", "-m", help="only this base model's bricks"),
    as_json: bool = AS_JSON,
) -> None:
    """List catalogued bricks: name, domain, rank, targets, measured effect, base model and its hash.

    Example: lmbricks adapters list --model smollm2-135m-instruct
    """
    from lmbricks.adapters.catalogue import list_bricks

    rows = [e.row() for e in list_bricks(model)]
    if as_json:
        print_json(rows)
        return
    columns = ("name", "source", "domain", "rank", "targets", "ppl before -> after", "base (sha256)")
    print_list("bricks", columns, [_row(r) for r in rows])
