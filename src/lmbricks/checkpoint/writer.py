"""Sharded safetensors writing with bounded memory, and an atomic one-call save.

Shards follow Hugging Face's layout: ``model-00001-of-0000N.safetensors`` plus
``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``), or a single
``model.safetensors`` and no index when everything fits in one shard (as ``save_pretrained`` does).

:class:`ShardedWriter` works in one of two modes:

* **buffered** (default): :meth:`ShardedWriter.add` keeps the current shard's tensors until the
  next one would overflow ``max_shard_bytes``, then writes that shard. Memory: one shard.
* **declared**: call :meth:`ShardedWriter.declare` with every tensor's name, shape and dtype
  first; shards and headers are laid out and written at once and each :meth:`ShardedWriter.add`
  writes its bytes straight into place (any order, any thread). Memory: the tensor being added.

Within a shard tensors are ordered by element size, largest first, so that every tensor starts at
an offset aligned to its element size (the data area itself starts 8-byte aligned), which lets
readers map them without copying.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmbricks.checkpoint.atomic import atomic_directory, clean_stale_temps
from lmbricks.checkpoint.guard import Inputs
from lmbricks.checkpoint.reader import SAFE_INDEX, SAFE_SINGLE
from lmbricks.checkpoint.safetensors_file import TORCH_TO_SAFETENSORS, dtype_size
from lmbricks.errors import CheckpointError, ConfigError

__all__ = [
    "ShardedWriter",
    "atomic_directory",
    "clean_stale_temps",
    "parse_size",
    "save_state_dict",
]

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?)b?|(b?))\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from a size such as ``1024``, ``"500MB"``, ``"1.5GB"`` or ``"2GiB"``.

    ``KB/MB/GB/TB`` are powers of 1000 (as in Hugging Face's ``max_shard_size``), ``KiB/MiB/GiB/TiB``
    powers of 1024; the trailing ``B`` and the case are optional.

    Raises:
        ConfigError: anything else, or a negative number.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"size {text} is negative")
        return text
    if not isinstance(text, str):
        raise ConfigError(f"size {text!r} must be an integer or a string like '500MB'")
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"size {text!r} not understood; use bytes or a number with a unit: 500MB, 1.5GB, 2GiB")
    number, prefix, binary = m.group(1), (m.group(2) or "").lower(), m.group(3)
    mult = 1024 ** ("kmgt".index(prefix) + 1) if binary else _UNITS[prefix]
    return round(float(number) * mult)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU contiguous tensor, without copying."""
    flat = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
    return memoryview(flat.numpy()).cast("B")  # type: ignore[arg-type]


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


@dataclass
class _Shard:
    """One output file: its tensors in on-disk order and their (relative) data offsets."""

    path: Path
    entries: list[tuple[str, tuple[int, ...], torch.dtype]] = field(default_factory=list)
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)
    data_start: int = 0

    def layout(self, metadata: dict[str, str]) -> bytes:
        """Order the entries, assign offsets and return the full prefix (length + header)."""
        self.entries.sort(key=lambda e: -dtype_size(e[2]))  # stable: keeps add order per size
        header: dict[str, object] = {"__metadata__": metadata}
        pos = 0
        for name, shape, dtype in self.entries:
            n = _numel(shape) * dtype_size(dtype)
            self.offsets[name] = (pos, pos + n)
            header[name] = {
                "dtype": TORCH_TO_SAFETENSORS[dtype],
                "shape": list(shape),
                "data_offsets": [pos, pos + n],
            }
            pos += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # pad so the data area starts 8-byte aligned
        self.data_start = 8 + len(raw)
        return len(raw).to_bytes(8, "little") + raw

    @property
    def nbytes(self) -> int:
        return sum(end - start for start, end in self.offsets.values())


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class ShardedWriter:
    """Write tensors into Hugging Face-style safetensors shards of bounded size.

    Args:
        directory: where the shards go (normally the temp dir of :func:`atomic_directory`); created
            if missing.
        max_shard_bytes: largest shard, in bytes or as ``"500MB"``/``"2GiB"``; a single tensor larger
            than this gets a shard of its own.
        metadata: extra ``__metadata__`` strings for every shard (``format: pt`` is always set).

    Example:
        >>> with atomic_directory("out/merged") as tmp:  # doctest: +SKIP
        ...     w = ShardedWriter(tmp, "1GB")
        ...     for name, t in tensors.items():
        ...         w.add(name, t)
        ...     w.finish()
    """

    def __init__(
        self,
        directory: str | Path,
        max_shard_bytes: int | str = "2GB",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = parse_size(max_shard_bytes)
        if self.max_shard_bytes <= 0:
            raise ConfigError(f"max_shard_bytes must be positive, got {max_shard_bytes!r}")
        meta = {"format": "pt", **(metadata or {})}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise ConfigError("safetensors metadata must map strings to strings")
        self.metadata = meta
        self._lock = threading.Lock()
        self._shards: list[_Shard] = []
        self._pending: dict[str, torch.Tensor] = {}  # buffered mode: the current shard's tensors
        self._pending_bytes = 0
        self._seen: set[str] = set()
        self._declared: dict[str, tuple[_Shard, tuple[int, ...], torch.dtype]] | None = None
        self._fds: dict[Path, int] = {}
        self._index: dict | None = None

    # -- shared checks ----------------------------------------------------------------------------
    def _check_new(self, name: str, dtype: torch.dtype) -> None:
        if self._index is not None:
            raise CheckpointError(f"{self.directory}: tensor {name!r} added after finish()")
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise CheckpointError(f"{self.directory}: invalid tensor name {name!r}")
        if dtype not in TORCH_TO_SAFETENSORS:
            raise CheckpointError(f"{self.directory}: tensor {name!r}: dtype {dtype} cannot be stored in safetensors")

    # -- declared mode ----------------------------------------------------------------------------
    def declare(self, specs: Iterable[tuple[str, Sequence[int], torch.dtype]]) -> None:
        """Announce every tensor (name, shape, dtype) before any :meth:`add`; switches to direct writes.

        Shards are filled in declaration order. Files are created at full size at once (sparse
        until written), so :meth:`add` can then be called in any order, from several threads.
        """
        with self._lock:
            if self._declared is not None or self._pending or self._shards:
                raise CheckpointError(f"{self.directory}: declare() must come once, before any add()")
            declared: dict[str, tuple[_Shard, tuple[int, ...], torch.dtype]] = {}
            shards: list[_Shard] = []
            size = 0
            for name, shape, dtype in specs:
                self._check_new(name, dtype)
                if name in declared:
                    raise CheckpointError(f"{self.directory}: tensor {name!r} declared twice")
                shape = tuple(int(d) for d in shape)
                n = _numel(shape) * dtype_size(dtype)
                if not shards or (size and size + n > self.max_shard_bytes):
                    shards.append(_Shard(Path()))
                    size = 0
                shards[-1].entries.append((name, shape, dtype))
                size += n
                declared[name] = (shards[-1], shape, dtype)
            if not shards:
                shards.append(_Shard(Path()))
            names = _shard_names(len(shards))
            for shard, file_name in zip(shards, names, strict=True):
                shard.path = self.directory / file_name
                prefix = shard.layout(self.metadata)
                fd = os.open(shard.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
                self._fds[shard.path] = fd
                _write_all(fd, memoryview(prefix), 0)
                os.ftruncate(fd, shard.data_start + shard.nbytes)
            self._shards = shards
            self._declared = declared

    # -- adding -----------------------------------------------------------------------------------
    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` under ``name`` (moved to CPU and made contiguous if needed).

        In buffered mode the tensor is kept, not copied, until its shard is written (at the latest
        by :meth:`finish`): do not modify it in place before then. In declared mode it is written
        before ``add`` returns.

        Raises:
            CheckpointError: duplicate or invalid name, unsupported dtype, or (declared mode) a name,
                shape or dtype that was not declared.
        """
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        if self._declared is not None:
            self._add_declared(name, t)
            return
        with self._lock:
            self._check_new(name, t.dtype)
            if name in self._seen:
                raise CheckpointError(f"{self.directory}: tensor {name!r} added twice")
            n = t.numel() * t.element_size()
            if self._pending and self._pending_bytes + n > self.max_shard_bytes:
                self._flush()
            self._seen.add(name)
            self._pending[name] = t
            self._pending_bytes += n
            if self._pending_bytes >= self.max_shard_bytes:
                self._flush()

    def _add_declared(self, name: str, t: torch.Tensor) -> None:
        assert self._declared is not None
        with self._lock:
            self._check_new(name, t.dtype)
            if name not in self._declared:
                raise CheckpointError(f"{self.directory}: tensor {name!r} was not declared")
            if name in self._seen:
                raise CheckpointError(f"{self.directory}: tensor {name!r} added twice")
            shard, shape, dtype = self._declared[name]
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise CheckpointError(
                    f"{shard.path}: tensor {name!r}: got {tuple(t.shape)} {t.dtype}, declared {shape} {dtype}"
                )
            self._seen.add(name)
            fd = self._fds[shard.path]
        # Outside the lock: pwrite to disjoint ranges of the same file is safe from several threads.
        _write_all(fd, _tensor_bytes(t), shard.data_start + shard.offsets[name][0])

    def _flush(self) -> None:
        """Write the buffered tensors as the next shard (under a provisional name)."""
        shard = _Shard(self.directory / f".shard-{len(self._shards) + 1:05d}.partial")
        shard.entries = [(name, tuple(t.shape), t.dtype) for name, t in self._pending.items()]
        prefix = shard.layout(self.metadata)
        fd = os.open(shard.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, memoryview(prefix), 0)
            for name, _shape, _dtype in shard.entries:
                _write_all(fd, _tensor_bytes(self._pending[name]), shard.data_start + shard.offsets[name][0])
        finally:
            os.close(fd)
        self._shards.append(shard)
        self._pending = {}
        self._pending_bytes = 0

    # -- finishing --------------------------------------------------------------------------------
    def finish(self) -> dict:
        """Write the last shard, give the shards their final names and write the index.

        Returns:
            The index: ``{"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}``.
            ``model.safetensors.index.json`` is written only when there are several shards.

        Raises:
            CheckpointError: called twice, or (declared mode) some declared tensors were never added.
        """
        with self._lock:
            if self._index is not None:
                raise CheckpointError(f"{self.directory}: finish() called twice")
            if self._declared is not None:
                missing = [n for n in self._declared if n not in self._seen]
                for fd in self._fds.values():
                    os.close(fd)
                self._fds = {}
                if missing:
                    raise CheckpointError(
                        f"{self.directory}: {len(missing)} declared tensors never added, e.g. {missing[0]!r}"
                    )
            else:
                if self._pending or not self._shards:
                    self._flush()
                for shard, file_name in zip(self._shards, _shard_names(len(self._shards)), strict=True):
                    final = self.directory / file_name
                    os.replace(shard.path, final)
                    shard.path = final
            located = {name: shard.path.name for shard in self._shards for name, _s, _d in shard.entries}
            weight_map = dict(sorted(located.items()))  # sorted, as save_pretrained writes it
            index = {
                "metadata": {"total_size": sum(s.nbytes for s in self._shards)},
                "weight_map": weight_map,
            }
            if len(self._shards) > 1:
                with open(self.directory / SAFE_INDEX, "w", encoding="utf-8") as fh:
                    json.dump(index, fh, indent=2)
                    fh.write("\n")
            self._index = index
            return index

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _shard_names(n: int) -> list[str]:
    if n == 1:
        return [SAFE_SINGLE]
    return [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def save_state_dict(
    dest: str | Path,
    tensors: Mapping[str, torch.Tensor],
    config: dict | None = None,
    force: bool = False,
    max_shard_bytes: int | str = "2GB",
    extra_files: Mapping[str, Path] | None = None,
    inputs: Inputs = (),
) -> Path:
    """Save tensors (and optionally config.json and other files) as a model directory, atomically.

    Args:
        dest: the directory to create.
        tensors: name -> tensor, written in iteration order (a lazy mapping is read one at a time).
        config: written as ``config.json`` when given.
        force: replace an existing ``dest``.
        max_shard_bytes: largest shard (see :func:`parse_size`).
        extra_files: file name in ``dest`` -> source file to copy (tokenizer files, ...).
        inputs: what the tensors were read from; ``dest`` must keep apart from them (see
            :func:`~lmbricks.checkpoint.guard.check_output`).

    Returns:
        ``dest`` as an absolute path.

    Raises:
        ConfigError: ``dest`` is refused (exists without ``force``, is or holds an input...).
    """
    with atomic_directory(dest, force=force, inputs=inputs) as tmp:
        writer = ShardedWriter(tmp, max_shard_bytes)
        for name in tensors:
            writer.add(name, tensors[name])
        writer.finish()
        if config is not None:
            with open(tmp / "config.json", "w", encoding="utf-8") as fh:
                json.dump(config, fh, indent=2, sort_keys=True)
                fh.write("\n")
        for file_name, src in (extra_files or {}).items():
            if Path(file_name).name != file_name:
                raise ConfigError(f"extra file name {file_name!r} must be a plain file name")
            shutil.copyfile(src, tmp / file_name)
    return Path(dest).expanduser().absolute()
