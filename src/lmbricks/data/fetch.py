"""Fetching built-in domains: download their packages, read the documents, write the domain."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmbricks.data import store
from lmbricks.data.build import Progress, quiet, shared_tokenizer, write_documents
from lmbricks.data.document import Document
from lmbricks.data.download import fetch_package, have_apt
from lmbricks.data.registry import DOMAINS, DomainSpec, get_domain
from lmbricks.errors import FetchError, LmbricksError


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def fetch_domain(
    name: str,
    force: bool = False,
    progress: Progress | None = None,
    tokenizer: Any = "default",
    tokenizer_name: str | None = None,
    note: Progress | None = None,
) -> Path:
    """Download a built-in domain's packages, split its documents and cache them.

    Args:
        name: a built-in domain (``lmbricks.data.DOMAINS``); a sub-domain fetches its parent.
        force: rebuild even when the domain is cached (downloads are still reused).
        progress: called with a short message at each stage.
        tokenizer: counts the tokens recorded in the manifest: ``"default"`` loads the default
            model's tokenizer (token counts are recorded as null, with the reason, when that fails),
            ``None`` skips counting, anything else is a Hugging Face tokenizer.
        tokenizer_name: the name recorded for a tokenizer passed in (default: its ``name_or_path``).
        note: called with one line when a source is not at its pinned version (the Debian archive
            moved on; default: printed on stderr). The manifest records it too.

    Returns:
        The domain's cache folder; its manifest records, per source, the package, the version used
        and the pinned one, the downloaded file's name and SHA-256.

    Raises:
        UnknownNameError: no such built-in domain.
        FetchError: a package could not be downloaded, or a Debian one is needed where ``apt-get``
            is missing (macOS, Windows).
    """
    spec = get_domain(name)
    progress = progress or quiet
    dest = store.domain_dir(spec.name)
    if store.read_manifest(spec.name) is not None and not force:
        return dest
    if spec.needs_apt and not have_apt():
        pkgs = ", ".join(p.name for p in spec.sources if p.registry == "debian")
        raise FetchError(
            f"domain {spec.name!r} comes from Debian package(s) {pkgs}, and apt-get is missing here "
            f"(macOS/Windows); add your own text with `lmbricks data add {spec.name} FILE...`"
        )
    docs, sources = _read_sources(spec, progress, note or _to_stderr)
    return write_documents(
        spec.name,
        spec.description,
        docs,
        sources,
        spec.split,
        spec.subdomain_field,
        tokenizer,
        tokenizer_name,
        force=True,
        progress=progress,
    )


def _read_sources(spec: DomainSpec, progress: Progress, note: Progress) -> tuple[list[Document], list[dict[str, Any]]]:
    """Download and read every package of ``spec``: ``(documents, one manifest record per package)``."""
    docs: list[Document] = []
    sources: list[dict[str, Any]] = []
    for pkg in spec.sources:
        progress(f"{spec.name}: downloading {pkg.name}")
        got = fetch_package(pkg.name, pkg.registry, pkg.version)
        if got.note:
            note(got.note)
        progress(f"{spec.name}: reading {pkg.name}")
        found = list(pkg.read(got.path))
        if not found:
            raise FetchError(f"package {pkg.name} {got.version} gave no documents; its layout may have changed")
        docs.extend(found)
        record = {"package": pkg.name, "registry": pkg.registry, **got.record()}
        sources.append({**record, "licence": pkg.licence, "documents": len(found)})
    return docs, sources


def fetch_all(
    names: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    tokenizer: Any = "default",
    note: Progress | None = None,
) -> dict[str, Path | LmbricksError]:
    """Fetch several domains (all built-in ones by default), loading the tokenizer once.

    ``note`` is as for :func:`fetch_domain`.

    Returns:
        Domain -> its folder, or the error that stopped it (the others still go on).
    """
    names = list(names or DOMAINS)
    for name in names:
        get_domain(name)
    progress = progress or quiet
    needed = any(force or store.read_manifest(n) is None for n in names)
    tokenizer, tok_name = shared_tokenizer(tokenizer, needed, progress)
    out: dict[str, Path | LmbricksError] = {}
    for name in names:
        start = time.perf_counter()
        try:
            out[name] = fetch_domain(
                name, force=force, progress=progress, tokenizer=tokenizer, tokenizer_name=tok_name, note=note
            )
        except LmbricksError as exc:
            out[name] = exc
        progress(f"{name}: done in {time.perf_counter() - start:.1f} s")
    return out
