"""Lazy safetensors reading: validate the header first, map tensor bytes only when asked.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length ``N``,
``N`` bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
offsets relative to the end of the header), then the raw little-endian tensor bytes.

:class:`SafetensorsFile` reads and checks only the header when opened (one small read), so opening
every shard of a 100 GB model costs milliseconds. :meth:`SafetensorsFile.get` returns a tensor that
*views* a private (copy-on-write) memory map of the file: no bytes are copied, only the pages that
are touched become resident, they are page cache the kernel can evict, and in-place edits of the
tensor never reach the file.
"""

from __future__ import annotations

import errno
import json
import math
import mmap
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import torch

from lmbricks.errors import CheckpointError

# The safetensors Rust library refuses headers above 100 MB; so do we (a corrupt length would
# otherwise make us allocate gigabytes before the JSON parser complains).
MAX_HEADER_BYTES = 100_000_000

_DTYPE_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}

#: safetensors dtype string -> torch dtype, for the dtypes this torch build has.
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    code: getattr(torch, attr) for code, attr in _DTYPE_NAMES.items() if hasattr(torch, attr)
}
#: torch dtype -> safetensors dtype string (the inverse of :data:`SAFETENSORS_DTYPES`).
TORCH_TO_SAFETENSORS: dict[torch.dtype, str] = {dt: code for code, dt in SAFETENSORS_DTYPES.items()}

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships wheels for
    raise ImportError("lmbricks.checkpoint reads safetensors in place and needs a little-endian machine")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a file, read from the header alone.

    ``start`` and ``end`` are absolute byte offsets in the file (header included); both are -1 for
    tensors that come from a pickle (``.bin``) rather than a safetensors file.
    """

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.numel * dtype_size(self.dtype)


def dtype_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype`` (``torch.bool`` is one byte)."""
    return torch.empty((), dtype=dtype).element_size()


def _fail(path: Path, message: str, tensor: str | None = None) -> CheckpointError:
    where = f"{path}: tensor {tensor!r}: " if tensor is not None else f"{path}: "
    return CheckpointError(where + message)


def _parse_header(path: Path, file_size: int, raw: bytes, data_start: int) -> tuple[dict, dict]:
    """Validate a decoded header; returns ``(tensor infos by name, metadata)``."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"malformed safetensors header JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _fail(path, f"safetensors header is a JSON {type(header).__name__}, expected an object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _fail(path, "header __metadata__ must map strings to strings")

    infos = {name: _tensor_info(path, file_size, name, entry, data_start) for name, entry in header.items()}

    # Tensors must not share bytes: sort by position and compare neighbours.
    ordered = sorted(infos.values(), key=lambda i: (i.start, i.end))
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.start < prev.end:
            raise _fail(
                path,
                f"bytes [{cur.start}, {cur.end}) overlap tensor {prev.name!r} at [{prev.start}, {prev.end})",
                cur.name,
            )
    return infos, metadata


def _tensor_info(path: Path, file_size: int, name: str, entry: object, data_start: int) -> TensorInfo:
    """One header entry checked: a known dtype, a shape, offsets that match it and lie inside the file."""
    if not isinstance(entry, dict):
        raise _fail(path, "header entry is not an object", name)
    code = entry.get("dtype")
    if code not in SAFETENSORS_DTYPES:
        known = ", ".join(SAFETENSORS_DTYPES)
        raise _fail(path, f"unknown or unsupported dtype {code!r} (this torch knows {known})", name)
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _fail(path, f"shape {shape!r} is not a list of non-negative integers", name)
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _fail(path, f"data_offsets {offsets!r} must be two integers 0 <= begin <= end", name)
    begin, end = offsets
    info = TensorInfo(name, SAFETENSORS_DTYPES[code], tuple(shape), data_start + begin, data_start + end)
    if end - begin != info.nbytes:
        raise _fail(
            path,
            f"data_offsets {offsets} span {end - begin} bytes but shape {tuple(shape)} of {code} needs {info.nbytes}",
            name,
        )
    if info.end > file_size:
        raise _fail(
            path, f"data ends at byte {info.end} but the file has only {file_size} bytes (truncated file?)", name
        )
    return info


N = TypeVar("N", bound="TensorNames")


class TensorNames(ABC):
    """``keys()``, ``in``, ``iter`` and ``len`` over a mapping ``_names`` whose keys are tensor names,
    and ``with`` closing the object (:meth:`close`) on exit."""

    @property
    @abstractmethod
    def _names(self) -> Mapping[str, Any]: ...

    @abstractmethod
    def close(self) -> None:
        """Release the open files."""

    def __enter__(self: N) -> N:
        return self

    def __exit__(
        self, _exc_type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def keys(self) -> list[str]:
        """Tensor names in order (a file's header order; a checkpoint's index or file order)."""
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class SafetensorsFile(TensorNames):
    """A lazily read, header-validated safetensors file.

    Opening reads and validates only the header. Tensors are views of a private memory map created
    on the first :meth:`get`; they stay valid after :meth:`close` (the mapping lives as long as any
    tensor viewing it).

    Args:
        path: the ``.safetensors`` file.

    Raises:
        CheckpointError: the file is missing, truncated or its header is malformed; the message
            names the file and, where one is at fault, the tensor.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mmap: mmap.mmap | None = None
        self._copy = False  # True when the file could only be mapped read-only
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                prefix = fh.read(8)
                if len(prefix) < 8:
                    raise _fail(self.path, f"truncated: {size} bytes, fewer than the 8-byte header length")
                n = int.from_bytes(prefix, "little")
                if n > MAX_HEADER_BYTES:
                    raise _fail(self.path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
                if 8 + n > size:
                    raise _fail(self.path, f"header length {n} runs past the end of the file ({size} bytes)")
                raw = fh.read(n)
        except FileNotFoundError:
            raise _fail(self.path, "file not found") from None
        except IsADirectoryError:
            raise _fail(self.path, "is a directory, expected a .safetensors file") from None
        self._size = size
        self._infos, self.metadata = _parse_header(self.path, size, raw, 8 + n)

    # -- header queries ---------------------------------------------------------------------------
    @property
    def _names(self) -> Mapping[str, Any]:
        return self._infos

    def info(self, name: str) -> TensorInfo:
        """Dtype, shape and byte range of ``name`` (no data is read)."""
        try:
            return self._infos[name]
        except KeyError:
            raise _fail(self.path, "no such tensor in this file", name) from None

    # -- data -------------------------------------------------------------------------------------
    def _map(self) -> mmap.mmap:
        if self._mmap is None:
            with open(self.path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size != self._size:
                    raise _fail(self.path, "file changed size since its header was read")
                try:
                    # ACCESS_COPY = MAP_PRIVATE: tensors are writable, writes never reach the file.
                    self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
                except OSError as exc:
                    if exc.errno != errno.ENOMEM:
                        raise _fail(self.path, f"cannot memory-map ({exc})") from None
                    # Strict overcommit accounting can refuse a large private mapping: map read-only
                    # and hand out copies instead (a write to a read-only mapping would crash).
                    self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                    self._copy = True
        return self._mmap

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name``, viewing the file's bytes (zero copy when the data is aligned).

        Pages are read when first touched (kernel readahead makes a full pass stream at disk speed),
        so slicing a large tensor reads only the slice. Data at an offset not aligned to the element
        size (legal in safetensors, never written by the safetensors library or by
        :class:`ShardedWriter`) is copied into an aligned tensor.

        Like ``safetensors.safe_open``, two calls for the same name return views of the same memory:
        in-place edits never reach the file but are seen by the other view, so ``clone()`` before
        editing a tensor in place if you will read it again from this object.
        """
        info = self.info(name)
        if info.numel == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        mm = self._map()
        if self._copy:
            raw = torch.empty(info.nbytes, dtype=torch.uint8)
            raw.numpy()[:] = memoryview(mm)[info.start : info.end]
        else:
            raw = torch.frombuffer(mm, dtype=torch.uint8, count=info.nbytes, offset=info.start)
            if info.start % dtype_size(info.dtype):
                raw = raw.clone()
        return raw.view(info.dtype).view(info.shape)

    def close(self) -> None:
        """Drop this object's reference to the memory map.

        The mapping itself is released when the last tensor viewing it is freed (closing it under a
        live tensor would make that tensor point at unmapped memory).
        """
        self._mmap = None

    def __repr__(self) -> str:
        return f"SafetensorsFile({str(self.path)!r}, {len(self._infos)} tensors)"
