"""Provenance of output models: content hashes, ``lmbricks.json``, tokenizer files.

Every directory lmbricks writes carries ``lmbricks.json`` naming the command or recipe that made it,
its inputs with their content hashes, the library version and the brick inventory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lmbricks.paths as paths
from lmbricks.checkpoint.identity import ModelIdentity, file_sha256
from lmbricks.checkpoint.identity import model_identity as identity_of_directory
from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.version import __version__

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


class _HashCache:
    """Per-file hashes keyed by (absolute path, size, mtime_ns), kept in ``paths.home()/hashes.json``.

    An entry holds one value per kind: ``sha256`` (the file's bytes) or ``tensors`` (per-tensor
    hashes of a safetensors file, see :func:`identity.safetensors_tensor_hashes`).
    """

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

    def get(self, path: Path, kind: str, compute: Callable[[Path], Any]) -> Any:
        """``compute(path)``, or the value cached for this file's path, size and mtime."""
        st = path.stat()
        key = str(path.resolve())
        hit = self.entries.get(key)
        if not (isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns):
            hit = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            self.entries[key] = hit
        if kind not in hit:
            hit[kind] = compute(path)
            self.dirty = True
        return hit[kind]

    def sha256(self, path: Path) -> str:
        return str(self.get(path, "sha256", file_sha256))

    def save(self) -> None:
        if not self.dirty:
            return
        # Drop entries of files that no longer exist, then replace the cache atomically.
        self.entries = {k: v for k, v in self.entries.items() if os.path.exists(k.removeprefix("identity:"))}
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{_CACHE_NAME}.", dir=self.path.parent)
        except OSError:  # a cache that cannot be written only costs time
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.entries, fh)
            os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)


def _weight_files(directory: Path) -> list[Path]:
    return [f for f in _hashed_files(directory) if f.name.endswith(_WEIGHT_SUFFIXES)]


def model_identity(path: str | Path) -> ModelIdentity | None:
    """The :class:`~lmbricks.checkpoint.identity.ModelIdentity` of a model directory (None for a file).

    Raises:
        CheckpointError: ``path`` does not exist, or the directory holds no model files.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: cannot hash, not found")
    if path.is_file():
        return None
    if not _hashed_files(path):
        raise CheckpointError(f"{path}: cannot hash, no config, weight or tokenizer files in it")
    files = _hashed_files(path)
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = f"identity:{path.resolve()}"
    cache = _HashCache()
    try:
        hit = cache.entries.get(key)
        if isinstance(hit, dict) and hit.get("stamp") == stamp:
            return ModelIdentity.from_record(hit["identity"])
        identity = identity_of_directory(path, _weight_files(path), cache.get)
        cache.entries[key] = {"stamp": stamp, "identity": identity.to_record()}
        cache.dirty = True
        return identity
    finally:
        cache.save()


def content_hash(path: str | Path) -> str:
    """SHA-256 identifying a model's content.

    For a directory: :attr:`ModelIdentity.sha256`, which covers the tensors (names, shapes, dtypes,
    bytes), the architecture fields of config.json and the tokenizer's content, and nothing a tool
    writes about itself (see :mod:`lmbricks.checkpoint.identity`). For a single file (a GGUF): the
    file's own SHA-256. Hashes are cached per file by (path, size, mtime), so hashing a large model
    again is instant.

    Raises:
        CheckpointError: ``path`` does not exist or the directory holds no model files.
    """
    path = Path(path)
    identity = model_identity(path)
    if identity is not None:
        return identity.sha256
    cache = _HashCache()
    try:
        return cache.sha256(path)
    finally:
        cache.save()


def reference_name(path: str | Path, relative_to: str | Path | None = None) -> str:
    """How a record names an input without a machine path.

    The registry name for a model in the cache (``paths.models_dir()/<name>``); otherwise the path
    relative to ``relative_to`` (the output directory, so the pair can move together), or the bare
    name when there is none.
    """
    path = Path(path).expanduser().absolute()
    try:
        if path.resolve().parent == paths.models_dir().resolve():
            return path.name
    except OSError:
        pass
    if relative_to is None:
        return path.name
    return os.path.relpath(path, Path(relative_to).expanduser().absolute())


def resolve_reference(ref: str, record_dir: str | Path) -> Path | str | None:
    """Inverse of :func:`reference_name`: a registry name as is, else the existing path relative to
    ``record_dir`` (the directory whose ``lmbricks.json`` holds ``ref``); None when neither exists."""
    candidate = Path(record_dir) / ref
    if ref and candidate.is_dir():
        return candidate.resolve()
    if os.sep not in ref and not ref.startswith("."):
        return ref  # a registry name
    return None


def input_record(name: str, path: str | Path, relative_to: str | Path | None = None) -> dict[str, Any]:
    """One entry of ``lmbricks.json``'s ``inputs``: name, reference (see :func:`reference_name`) and
    identity hash (with its parts for model directories)."""
    entry: dict[str, Any] = {"name": name, "ref": reference_name(path, relative_to)}
    identity = model_identity(path)
    if identity is None:
        entry["sha256"] = content_hash(path)
    else:
        entry["sha256"] = identity.sha256
        entry["identity"] = identity.to_record()
    return entry


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
        inputs: input name -> model directory or file; each is recorded by :func:`input_record`
            (reference name and identity, never a machine path).
        bricks: the brick inventory (experts, adapters, routers), e.g. from ``archmap.inventory``.

    Returns:
        The path of the written file.
    """
    record = {
        "lmbricks_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "recipe": recipe,
        "inputs": [input_record(name, p, relative_to=directory) for name, p in inputs.items()],
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


def read_record(directory: str | Path) -> dict[str, Any]:
    """``directory/lmbricks.json`` as a dict ({} when the directory has none or it is unreadable)."""
    path = Path(directory) / PROVENANCE_FILE
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_recorded_base(
    subject: str,
    recorded_sha256: str | None,
    recorded_identity: Mapping[str, Any] | None,
    recorded_name: str | None,
    base_path: str | Path,
    base_name: str,
) -> None:
    """Refuse ``subject`` (a brick, an adapter) on a base other than the one it records.

    The one rule for every command that applies a brick to a model: the base's identity
    (:func:`content_hash`) must equal the recorded one. The error names what differs: the weights,
    each differing config field, or the tokenizer.

    Args:
        subject: how to name the brick in the message (``brick 'smollm2-code'``).
        recorded_sha256: the base identity the brick records (None: nothing recorded, nothing to check).
        recorded_identity: the recorded identity's parts (:meth:`ModelIdentity.to_record`), if any.
        recorded_name: the recorded base's name, for the message.
        base_path: the model directory the brick is about to be applied to.
        base_name: its name, for the message.

    Raises:
        ConfigError: the identities differ.
    """
    if recorded_sha256 is None:
        return
    identity = model_identity(base_path)
    actual = identity.sha256 if identity is not None else content_hash(base_path)
    if actual == recorded_sha256:
        return
    what = "its record predates identity parts, so what differs is unknown"
    if identity is not None and recorded_identity:
        try:
            diffs = ModelIdentity.from_record(recorded_identity).differences(identity)
        except (KeyError, TypeError):
            diffs = []
        if diffs:
            what = "they differ in " + ", ".join(diffs)
    raise ConfigError(
        f"{subject} was trained on {recorded_name or 'another model'} (identity {recorded_sha256[:12]}), "
        f"not on {base_name} (identity {actual[:12]}): {what}; apply it to the model it was trained on, "
        "or train a brick for this model (lmbricks adapters train)"
    )
