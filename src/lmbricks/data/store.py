"""The on-disk corpus cache: ``data_dir()/<domain>/{train,validation,test}.jsonl`` plus ``manifest.json``.

One document per JSONL line (``{"text", "source", "id", ...}``). A domain with sub-domains
(``multilingual/de``) keeps one such folder per sub-domain under the domain's folder and a
manifest at the top listing them. Folders are written beside their destination and renamed into
place only when complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lmbricks.paths as paths
from lmbricks.data.document import Document
from lmbricks.data.split import SPLITS
from lmbricks.errors import CheckpointError, ConfigError

MANIFEST = "manifest.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)?$")


def check_name(name: str) -> str:
    """Validate a domain name (lower-case letters, digits, ``_.-``; one optional ``/sub``)."""
    if not _NAME.match(name):
        raise ConfigError(
            f"domain name {name!r} is invalid: use lower-case letters, digits, '_', '-', '.', "
            "and at most one '/' for a sub-domain (e.g. 'legal' or 'multilingual/de')"
        )
    return name


def domain_dir(name: str) -> Path:
    """The cache folder of a domain or sub-domain (not created)."""
    return paths.data_dir() / check_name(name)


def read_manifest(name: str) -> dict[str, Any] | None:
    """The manifest of a cached domain, or ``None`` when it is not cached."""
    path = domain_dir(name) / MANIFEST
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); fetch the domain again with --force") from exc
    return data


def read_split(name: str, split: str) -> list[dict[str, Any]]:
    """The JSONL records of one split of a cached (sub-)domain, in stored order."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is unknown; choose one of {', '.join(SPLITS)}")
    path = domain_dir(name) / f"{split}.jsonl"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; fetch the domain again with --force")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_stats(docs: Iterable[Document]) -> dict[str, int]:
    """Documents and UTF-8 bytes of a list of documents."""
    docs = list(docs)
    return {"documents": len(docs), "bytes": sum(len(d.text.encode("utf-8")) for d in docs)}


def _write_split_files(folder: Path, splits: Mapping[str, list[Document]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for doc in splits.get(split, []):
                fh.write(json.dumps(doc.record(), ensure_ascii=False) + "\n")


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` into ``folder``."""
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_domain(
    name: str,
    parts: Mapping[str, tuple[Mapping[str, list[Document]], Mapping[str, Any]]],
    manifest: Mapping[str, Any],
    force: bool = False,
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Write a domain atomically: every part into a hidden temporary folder, then one rename.

    Args:
        name: the domain name (no ``/``).
        parts: ``""`` -> (splits, manifest) for a plain domain; for a domain with sub-domains,
            sub-name -> (splits, manifest) for each, written to ``<domain>/<sub>/``.
        manifest: the top-level manifest (written to ``<domain>/manifest.json``); for a plain domain
            it is the manifest of ``parts[""]``.
        force: replace an existing cached domain (one lmbricks wrote: it has ``manifest.json``).
        inputs: the files the text came from (the domain folder must keep apart from them).

    Returns:
        The domain folder.

    Raises:
        ConfigError: the domain is cached and ``force`` is false, or the guard refuses the folder.
    """
    from lmbricks.checkpoint import atomic_directory

    dest = domain_dir(name)
    if dest.exists() and not force:
        raise ConfigError(f"domain {name!r} is already cached in {dest}; pass force=True (--force) to replace it")
    with atomic_directory(dest, force=force, inputs=inputs, marker=MANIFEST) as tmp:
        for sub, (splits, sub_manifest) in parts.items():
            folder = tmp / sub if sub else tmp
            _write_split_files(folder, splits)
            if sub:
                write_manifest(folder, sub_manifest)
        write_manifest(tmp, manifest)
    return dest


def cached_names() -> list[str]:
    """Names of all cached top-level domains (folders holding a manifest), sorted."""
    root = paths.data_dir()
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )
