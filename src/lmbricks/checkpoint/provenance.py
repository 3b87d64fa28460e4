"""Provenance of output models: content hashes, ``lmbricks.json``, tokenizer files.

Every directory lmbricks writes carries ``lmbricks.json`` naming the command or recipe that made it,
its inputs with their content hashes, the library version and the brick inventory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmbricks import __version__, paths
from lmbricks.errors import CheckpointError

PROVENANCE_FILE = "lmbricks.json"

#: Tokenizer (and generation) files copied alongside an output model when the source has them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_CACHE_NAME = "hashes.json"
_CHUNK = 8 << 20


def _hashed_files(directory: Path) -> list[Path]:
    """The files that define a model: config, weights (and their index), tokenizer files."""
    chosen = []
    for entry in directory.iterdir():
        if not entry.is_file():
            continue
        name = entry.name
        if (
            name == "config.json"
            or name in TOKENIZER_FILES
            or name in _WEIGHT_INDEXES
            or (name.endswith(_WEIGHT_SUFFIXES) and not name.startswith("."))
        ):
            chosen.append(entry)
    return sorted(chosen, key=lambda p: p.name)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


class _HashCache:
    """File hashes keyed by (absolute path, size, mtime_ns), kept in ``paths.home()/hashes.json``."""

    def __init__(self) -> None:
        self.path = paths.home() / _CACHE_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            if isinstance(data, dict):
                self.entries = data
        except (OSError, ValueError):
            pass  # missing or corrupt cache: start afresh

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self.entries.get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return str(hit["sha256"])
        value = _sha256_file(path)
        self.entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": value}
        self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty:
            return
        # Drop entries of files that no longer exist, then replace the cache atomically.
        self.entries = {k: v for k, v in self.entries.items() if os.path.exists(k)}
        fd, tmp = tempfile.mkstemp(prefix=f".{_CACHE_NAME}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.entries, fh)
            os.replace(tmp, self.path)
        except OSError:  # a cache that cannot be written only costs time
            Path(tmp).unlink(missing_ok=True)


def content_hash(path: str | Path) -> str:
    """SHA-256 identifying a model's content.

    For a directory: the SHA-256 of the sorted lines ``<file name>\\t<sha256 of file>\\n`` over
    config.json, the weight files and their index, and the tokenizer files (``lmbricks.json`` and
    anything else are left out, so two copies of a model hash the same). For a single file (a GGUF):
    the file's own SHA-256. File hashes are cached by (path, size, mtime) so hashing a large model
    again is instant.

    Raises:
        CheckpointError: ``path`` does not exist or the directory holds no model files.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: cannot hash, not found")
    cache = _HashCache()
    try:
        if path.is_file():
            return cache.sha256(path)
        files = _hashed_files(path)
        if not files:
            raise CheckpointError(f"{path}: cannot hash, no config, weight or tokenizer files in it")
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.name}\t{cache.sha256(file)}\n".encode())
        return digest.hexdigest()
    finally:
        cache.save()


def write_provenance(
    directory: Path,
    *,
    command: str,
    recipe: dict | None,
    inputs: Mapping[str, str | Path],
    bricks: dict | None = None,
) -> Path:
    """Write ``lmbricks.json`` into ``directory`` (normally the temp dir of an atomic write).

    Args:
        directory: the output model directory.
        command: the command line or API call that produced it.
        recipe: the (validated) recipe, or None.
        inputs: input name -> model directory or file; each is hashed with :func:`content_hash`.
        bricks: the brick inventory (experts, adapters, routers), e.g. from ``archmap.inventory``.

    Returns:
        The path of the written file.
    """
    record = {
        "lmbricks_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "recipe": recipe,
        "inputs": [
            {"name": name, "path": str(Path(p).expanduser().absolute()), "sha256": content_hash(p)}
            for name, p in inputs.items()
        ],
        "bricks": bricks or {},
    }
    out = Path(directory) / PROVENANCE_FILE
    tmp = out.with_name(f".{PROVENANCE_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, default=str)
        fh.write("\n")
    os.replace(tmp, out)
    return out


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer (and generation config) files that exist in ``src`` into ``dst``.

    Returns:
        The names of the files copied, in :data:`TOKENIZER_FILES` order.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied
