"""Cached routing centroids: each brick's domain centroid is computed once, then read from disk.

A brick's centroid (the base model's mean hidden state over the brick's domain text, see
:func:`~lmbricks.adapters.route.fit_router`) costs one forward pass per training document, tens of
passes per brick. It depends only on the base model, the brick, the domain text and the embedding
settings, so it is stored under ``paths.home()/cache/centroids/<key>.json`` where the key is the
SHA-256 of those inputs (base and brick content hashes, the domain, a fingerprint of the domain's
corpus, layer, token budgets, shuffling seed). A later ``route`` reads the centroids and spends one
forward pass per prompt. Any change of an input gives another key; an unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import lmbricks.paths as paths
from lmbricks.adapters.route import Router, fit_router
from lmbricks.adapters.session import BrickSet
from lmbricks.errors import ConfigError

#: Bump when the way centroids are computed changes (old entries are then ignored).
CENTROID_FORMAT = 1


@dataclass(frozen=True)
class CentroidSpec:
    """How a centroid is embedded (see :func:`~lmbricks.adapters.route.fit_router`).

    Attributes:
        layer: hidden layer (-1: the last layer's normalised output).
        max_tokens: tokens of domain text per brick.
        doc_tokens: tokens per document (documents are embedded one by one, as prompts are).
        seed: seed of the document shuffle.
    """

    layer: int = -1
    max_tokens: int = 2048
    doc_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.doc_tokens < 1:
            raise ConfigError(f"centroid token budgets must be >= 1, got {self.max_tokens} / {self.doc_tokens}")


def centroid_dir() -> Path:
    """Where cached centroids live (created on first use)."""
    path = paths.home() / "cache" / "centroids"
    path.mkdir(parents=True, exist_ok=True)
    return path


def centroid_key(base_sha256: str, brick_sha256: str, domain: str, data_id: str, spec: CentroidSpec) -> str:
    """SHA-256 naming one centroid: every input it depends on, in a fixed order."""
    fields = {
        "format": CENTROID_FORMAT,
        "base": base_sha256,
        "brick": brick_sha256,
        "domain": domain,
        "data": data_id,
        **asdict(spec),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def domain_fingerprint(domain: str) -> str:
    """Identifies the cached corpus of ``domain`` (its manifest's creation time and train split size)."""
    from lmbricks.data.store import read_manifest

    manifest = read_manifest(domain)
    if manifest is None:
        return "not-cached"
    train = manifest.get("splits", {}).get("train", {})
    return f"{manifest.get('created')}|{train.get('documents')}|{train.get('bytes')}"


def read_centroid(folder: Path, key: str, hidden: int | None = None) -> torch.Tensor | None:
    """The cached (H,) centroid of ``key``, or None when absent, unreadable or of another width."""
    try:
        data = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        vec = torch.tensor(data["centroid"], dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if vec.ndim != 1 or (hidden is not None and vec.numel() != hidden) or not torch.isfinite(vec).all():
        return None
    return vec


def write_centroid(folder: Path, key: str, vec: torch.Tensor, about: Mapping[str, Any]) -> Path:
    """Store a centroid atomically (temporary file renamed into place); ``about`` is kept for people."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{key}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({**about, "centroid": vec.float().tolist()}, fh)
        os.replace(tmp, dest)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


@dataclass
class CentroidStats:
    """How a router was assembled: centroids read from the cache and centroids computed."""

    hits: int = 0
    computed: int = 0


def cached_router(
    model: Any,
    tokenizer: Any,
    keys: Mapping[str, str],
    texts_of: Callable[[str], Sequence[str]],
    spec: CentroidSpec = CentroidSpec(),
    *,
    folder: Path | None = None,
    about: Mapping[str, Mapping[str, Any]] | None = None,
    stats: CentroidStats | None = None,
    refresh: bool = False,
    on_brick: Callable[[str], None] | None = None,
) -> Router:
    """A router whose centroids come from the cache when present, computed (and stored) otherwise.

    Args:
        model: the base model (no brick active).
        tokenizer: its tokenizer.
        keys: ``{brick name: centroid key}`` (see :func:`centroid_key`), in router order.
        texts_of: a brick name's domain documents, in embedding order (called on a cache miss only).
        spec: embedding settings (must match those hashed into the keys).
        folder: cache folder (default :func:`centroid_dir`).
        about: per brick, fields stored beside the vector (domain, hashes) for people reading the cache.
        stats: filled with the number of hits and computed centroids.
        refresh: ignore cached entries (compute every centroid and overwrite its entry).
        on_brick: called with a brick name before its centroid is computed.

    Returns:
        The :class:`Router` (centroids (K, H) in the order of ``keys``).
    """
    if not keys:
        raise ConfigError("no bricks to route between")
    folder = folder if folder is not None else centroid_dir()
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    stats = stats if stats is not None else CentroidStats()
    vecs: dict[str, torch.Tensor] = {}
    for name, key in keys.items():
        vec = None if refresh else read_centroid(folder, key, hidden)
        if vec is not None:
            vecs[name] = vec
            stats.hits += 1
    missing = [n for n in keys if n not in vecs]
    if missing:
        fitted = fit_router(
            model,
            tokenizer,
            {n: texts_of(n) for n in missing},
            layer=spec.layer,
            max_tokens=spec.max_tokens,
            doc_tokens=spec.doc_tokens,
            on_brick=on_brick,
        )
        for name, vec in zip(fitted.names, fitted.centroids, strict=True):
            vecs[name] = vec
            info = {**asdict(spec), **dict((about or {}).get(name, {})), "brick": name}
            write_centroid(folder, keys[name], vec, info)
            stats.computed += 1
    names = list(keys)
    return Router(names, torch.stack([vecs[n] for n in names]), spec.layer)


def brick_router(
    bset: BrickSet,
    model: Any,
    tokenizer: Any,
    layer: int = -1,
    max_tokens: int = 2048,
    *,
    use_cache: bool = True,
    stats: CentroidStats | None = None,
) -> Router:
    """A router over the bricks of ``bset``: one centroid per brick from its domain's train split.

    Centroids are read from the centroid cache (keyed by the base and brick content hashes, the
    domain corpus and the settings) and computed only when missing, so routing a prompt costs one
    forward pass once each brick's centroid has been computed once.

    Args:
        bset: base model and bricks.
        model: the base model (no brick active), tokenizer: its tokenizer.
        layer: hidden layer; max_tokens: domain tokens per centroid.
        use_cache: False recomputes every centroid (and refreshes the cache).
        stats: filled with cache hits and computed centroids.
    """
    import random

    from lmbricks.checkpoint import content_hash
    from lmbricks.data import load_texts

    spec = CentroidSpec(layer=layer, max_tokens=max_tokens)
    keys: dict[str, str] = {}
    domains: dict[str, str] = {}
    about: dict[str, dict[str, Any]] = {}
    for name, info in zip(bset.names, bset.infos, strict=False):
        if info.domain is None:
            raise ConfigError(f"brick {info.name!r} records no domain: its centroid cannot be computed")
        brick_sha = content_hash(info.path)
        keys[name] = centroid_key(bset.base.sha256, brick_sha, info.domain, domain_fingerprint(info.domain), spec)
        domains[name] = info.domain
        about[name] = {"domain": info.domain, "base_sha256": bset.base.sha256, "brick_sha256": brick_sha}

    def texts_of(name: str) -> list[str]:
        docs = [d for d in load_texts(domains[name], "train") if d.strip()]
        random.Random(spec.seed).shuffle(docs)
        return docs

    return cached_router(model, tokenizer, keys, texts_of, spec, about=about, stats=stats, refresh=not use_cache)
