"""Reading corpora by domain: texts and records of a split (fetched first if built in), listings, sources."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmbricks.data import store
from lmbricks.data.fetch import fetch_domain
from lmbricks.data.registry import DOMAINS, DomainSpec, get_domain
from lmbricks.data.split import SPLITS
from lmbricks.errors import ConfigError, LmbricksError, UnknownNameError


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
        return [r for sub in sorted(manifest["subdomains"]) for r in store.read_split(f"{domain}/{sub}", split)]
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
        {
            "package": p.name,
            "registry": p.registry,
            "version": None,
            "pinned_version": p.version,
            "file": None,
            "sha256": None,
            "note": None,
            "licence": p.licence,
        }  # fmt: skip
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


def source_records(names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """What ``lmbricks data sources`` shows: per domain, whether it is cached and its :func:`domain_sources`.

    Args:
        names: domains (default: every built-in and added one, as :func:`list_domains` orders them).

    Returns:
        One dict per domain: ``domain``, ``cached``, ``sources``.

    Raises:
        UnknownNameError: a name is neither cached nor built in.
    """
    names = list(names) or [row["name"] for row in list_domains()]
    for name in names:
        if store.read_manifest(name) is None:
            get_domain(name)  # neither cached nor built in: unknown
    return [{"domain": n, "cached": store.read_manifest(n) is not None, "sources": domain_sources(n)} for n in names]
