"""Your own text as a domain: files become documents, split and cached like the built-in ones."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmbricks.data import store
from lmbricks.data.archive import sha256_file
from lmbricks.data.build import Progress, quiet, write_documents
from lmbricks.data.document import Document
from lmbricks.data.split import SplitRule
from lmbricks.errors import ConfigError

USER_RULE = SplitRule(fraction=0.05, min_test_bytes=12_000, min_validation_bytes=12_000)


def _user_documents(files: Sequence[Path]) -> list[Document]:
    docs: list[Document] = []
    names: dict[str, int] = defaultdict(int)
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path} is not a file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        names[path.name] += 1
        ident = path.name if names[path.name] == 1 else f"{path.name}~{names[path.name]}"
        if len(files) == 1:  # one big file: its paragraphs are the documents
            paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
            docs.extend(
                Document(id=f"user:{ident}#{i}", text=p, source=f"user:{path.name}") for i, p in enumerate(paras)
            )
        elif text.strip():
            docs.append(Document(id=f"user:{ident}", text=text.strip(), source=f"user:{path.name}"))
    return docs


def _file_source(path: Path) -> dict[str, Any]:
    """The manifest record of one user file."""
    licence = "unknown (user text)"
    return {
        "package": f"user:{path.name}",
        "registry": "user",
        "version": None,
        "sha256": sha256_file(path),
        "licence": licence,
    }


def add_domain(
    name: str,
    files: Sequence[str | Path],
    force: bool = False,
    tokenizer: Any = "default",
    tokenizer_name: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Make a domain from your own text files (UTF-8).

    Each file is one document; a single file is cut into paragraphs at blank lines instead. The
    documents are split like the built-in domains (by hash, 5% each to validation and test, at
    least 12 KB each where the text allows, never more than a quarter).

    Args:
        name: the domain name (may shadow a built-in one, e.g. on macOS where Debian packages cannot
            be fetched).
        files: the text files.
        force: replace a cached domain of that name.
        tokenizer: as for :func:`fetch_domain`.
        tokenizer_name: as for :func:`fetch_domain`.
        progress: called with a short message at each stage.

    Returns:
        The domain's cache folder.

    Raises:
        ConfigError: a bad name, a missing or non-UTF-8 file, no text, or a cached domain without ``force``.
    """
    store.check_name(name)
    if "/" in name:
        raise ConfigError(f"domain name {name!r}: user domains cannot be sub-domains (no '/')")
    if not files:
        raise ConfigError("add_domain needs at least one file")
    if store.domain_dir(name).exists() and not force:
        raise ConfigError(f"domain {name!r} is already cached; pass force=True (--force) to replace it")
    paths = [Path(f) for f in files]
    from lmbricks.checkpoint import check_output  # (imports torch: only when a domain is added)

    check_output(store.domain_dir(name), paths, force, marker=store.MANIFEST)  # before reading any file
    docs = _user_documents(paths)
    sources = [_file_source(p) for p in paths]
    return write_documents(
        name,
        f"user text from {len(paths)} file(s)",
        docs,
        sources,
        USER_RULE,
        None,
        tokenizer,
        tokenizer_name,
        force=force,
        progress=progress or quiet,
        inputs=paths,
    )
