"""``lmbricks models``: the registry of fetchable models, fetching, and model inventories."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from lmbricks.cli.common import console, err_console, notes_to_stderr, print_json, user_errors
from lmbricks.cli.options import force_option, json_option, model_argument, reads_checkpoints
from lmbricks.cli.tables import print_records

app = typer.Typer(help="Registry models: list, fetch and inspect.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_models(as_json: bool = json_option()) -> None:
    """List the models lmbricks can fetch from the package registries (names are never shortened).

    Example: lmbricks models list --json
    """
    from lmbricks import paths
    from lmbricks.hub import REGISTRY

    records: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "default": spec.required,
            "architecture": spec.architecture,
            "cached": (paths.models_dir() / spec.name / "config.json").exists(),
            "packages": [f"{p.package}=={p.version}" for p in spec.parts],
            "licence": spec.licence,
            "description": spec.description,
        }
        for spec in REGISTRY.values()
    ]

    def row(r: dict[str, Any]) -> tuple[str, ...]:
        packages = r["packages"]
        source = packages[0].split("==")[0] + (f" (+{len(packages) - 1} parts)" if len(packages) > 1 else "")
        name = r["name"] + (" (default)" if r["default"] else "")
        return (name, r["architecture"], "yes" if r["cached"] else "no", source, r["description"])

    print_records(records, as_json, "Registry models", ("name", "architecture", "cached", "source", "description"), row)


@app.command()
@user_errors
def fetch(
    name: str = model_argument("smollm2-135m-instruct", "Registry name (see `lmbricks models list`)."),
    force: bool = force_option("Convert again even if cached."),
    accept_conversion: bool = typer.Option(
        False, "--accept-conversion", help="Keep a conversion whose tensors differ from the pinned ones."
    ),
) -> None:
    """Download a registry model, check its hash, convert it to safetensors in the cache and check
    the converted tensors against the pinned conversion.

    Example: lmbricks models fetch smollm2-135m-instruct
    """
    from lmbricks.hub import fetch_model, get_spec

    spec = get_spec(name)
    with err_console.status(f"fetching {name}") as status:
        progress = notes_to_stderr(lambda msg: status.update(f"{name}: {msg}"))
        path = fetch_model(spec, force=force, progress=progress, accept_conversion=accept_conversion)
    console.print(f"{name} ready at {path}")


@app.command()
@user_errors
@reads_checkpoints
def info(
    ref: str = model_argument("smollm2-135m-instruct"),
    as_json: bool = json_option("Print JSON instead of tables."),
) -> None:
    """Show a model's configuration and its parameters by role (embedding, attention, FFN, ...).

    Example: lmbricks models info smollm2-135m-instruct --json
    """
    from lmbricks.hub import resolve_model
    from lmbricks.tour.inventory import model_inventory

    inv = model_inventory(resolve_model(ref))
    if as_json:
        print_json(inv)
        return
    table = Table(title=f"{ref} ({inv['architecture']}, {inv['total_parameters']:,} parameters)")
    table.add_column("role")
    table.add_column("parameters", justify="right")
    table.add_column("share", justify="right")
    for role, count in inv["parameters_by_role"].items():
        table.add_row(role, f"{count:,}", f"{count / inv['total_parameters']:.1%}")
    console.print(table)
    console.print(
        f"layers {inv['num_layers']}, hidden {inv['hidden_size']}, FFN neurons per layer "
        f"{inv['ffn_neurons_per_layer']}, vocab {inv['vocab_size']}, tied embeddings {inv['tied_embeddings']}"
    )
