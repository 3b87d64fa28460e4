"""Open a Hugging Face model directory lazily: config, shard index, tensor headers.

Layouts understood, in the order Hugging Face's loader tries them:
1. ``model.safetensors`` (one file);
2. ``model.safetensors.index.json`` plus the shards it names;
3. only with ``allow_pickle=True``: ``pytorch_model.bin``, ``pytorch_model.bin.index.json`` plus shards,
   or a single ``*.pt`` / ``*.pth`` / ``*.bin`` file. Pickles are loaded with ``torch.load(weights_only=True,
   mmap=True)``, which refuses to run code, but they are still opt-in.

Whether pickles may be read is the reader's ``allow_pickle`` argument, or, when it is left out, the
setting of the innermost :func:`allow_pickles` block (off by default). The CLI's ``--allow-pickle``
opens such a block around the command, so every reader the command opens, however deep, follows it.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from lmbricks.checkpoint.safetensors_file import SafetensorsFile, TensorInfo, TensorNames
from lmbricks.errors import CheckpointError

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")

_ALLOW_PICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar("lmbricks_allow_pickle", default=False)


@contextlib.contextmanager
def allow_pickles(enabled: bool = True) -> Iterator[None]:
    """Within the block, readers opened without an explicit ``allow_pickle`` accept pickles.

    Example:
        >>> with allow_pickles():  # doctest: +SKIP
        ...     merge("recipe.yaml", "out")  # inputs may be pytorch_model.bin directories
    """
    token = _ALLOW_PICKLE.set(enabled)
    try:
        yield
    finally:
        _ALLOW_PICKLE.reset(token)


def pickles_allowed() -> bool:
    """The setting of the innermost :func:`allow_pickles` block (False outside any)."""
    return _ALLOW_PICKLE.get()


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, raising :class:`CheckpointError` naming ``path`` when missing or malformed."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: malformed {what} ({exc})") from None


def _read_index(path: Path) -> dict[str, str]:
    index = read_json(path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(f"{path}: 'weight_map' must be an object mapping tensor names to shard files")
    for name, shard in weight_map.items():
        if Path(shard).name != shard:
            raise CheckpointError(f"{path}: tensor {name!r}: shard {shard!r} must be a file name in the directory")
    return weight_map


class _PickleFile:
    """A ``torch.load``-ed state dict behind the same small interface as :class:`SafetensorsFile`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # legacy (pre-zipfile) pickles cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: file not found") from None
        except Exception as exc:  # unpickling errors come in many types
            raise CheckpointError(f"{path}: cannot load as a weights-only torch pickle ({exc})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
        self._tensors: dict[str, torch.Tensor] = state

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def info(self, name: str) -> TensorInfo:
        t = self._tensors[name]
        return TensorInfo(name, t.dtype, tuple(t.shape), -1, -1)

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def close(self) -> None:
        self._tensors = {}


class CheckpointReader(TensorNames):
    """A lazily opened Hugging Face model directory.

    Opening parses ``config.json``, the shard index and every shard's header, and checks that they
    agree (every shard exists, every indexed tensor is in its shard, no tensor is in two shards).
    No tensor data is read until :meth:`get`.

    Args:
        path: the model directory.
        allow_pickle: accept ``.bin``/``.pt`` pickles (loaded weights-only) when no safetensors exist;
            None follows :func:`allow_pickles` (default: refuse).

    Raises:
        CheckpointError: missing or malformed config, index or shard; the message names the file
            (and the tensor where one is at fault).

    Example:
        >>> with CheckpointReader("models/smollm2") as ckpt:  # doctest: +SKIP
        ...     w = ckpt.get("model.layers.0.mlp.up_proj.weight")  # (intermediate, hidden)
    """

    def __init__(self, path: str | Path, allow_pickle: bool | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            what = "is not a directory" if self.path.exists() else "not found"
            raise CheckpointError(f"{self.path}: model directory {what}")
        config = read_json(self.path / "config.json", "config.json")
        if not isinstance(config, dict):
            raise CheckpointError(f"{self.path / 'config.json'}: expected a JSON object")
        self.config: dict[str, Any] = config
        self.allow_pickle = pickles_allowed() if allow_pickle is None else allow_pickle
        self._files: dict[str, SafetensorsFile | _PickleFile] = {}  # file name -> opened file
        self._where: dict[str, str] = {}  # tensor name -> file name
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- discovery --------------------------------------------------------------------------------
    def _open(self) -> None:
        d = self.path
        if (d / SAFE_SINGLE).is_file():
            self._add_single(SafetensorsFile(d / SAFE_SINGLE))
        elif (d / SAFE_INDEX).is_file():
            self._add_sharded(_read_index(d / SAFE_INDEX), d / SAFE_INDEX, SafetensorsFile)
        else:
            pickles = sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
            if not pickles and not (d / PICKLE_INDEX).is_file():
                raise CheckpointError(f"{d}: no weights found (expected {SAFE_SINGLE} or {SAFE_INDEX} with its shards)")
            if not self.allow_pickle:
                found = PICKLE_INDEX if (d / PICKLE_INDEX).is_file() else pickles[0]
                raise CheckpointError(
                    f"{d / found}: weights are a pickle, which is not loaded by default; pass --allow-pickle "
                    "(Python: allow_pickle=True or lmbricks.checkpoint.allow_pickles()) to load it with "
                    "torch.load(weights_only=True), or convert the model to safetensors"
                )
            if (d / PICKLE_SINGLE).is_file():
                self._add_single(_PickleFile(d / PICKLE_SINGLE))
            elif (d / PICKLE_INDEX).is_file():
                self._add_sharded(_read_index(d / PICKLE_INDEX), d / PICKLE_INDEX, _PickleFile)
            elif len(pickles) == 1:
                self._add_single(_PickleFile(d / pickles[0]))
            else:
                raise CheckpointError(
                    f"{d}: several pickle files ({', '.join(pickles)}) and no {PICKLE_INDEX} "
                    "to say which tensor is where"
                )

    def _add_single(self, file: SafetensorsFile | _PickleFile) -> None:
        self._files[file.path.name] = file
        self._where = dict.fromkeys(file.keys(), file.path.name)

    def _add_sharded(self, weight_map: dict[str, str], index_path: Path, opener: type) -> None:
        by_shard: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
            by_shard.setdefault(shard, []).append(name)
        holder: dict[str, str] = {}  # tensor -> first shard whose header has it
        for shard, names in sorted(by_shard.items()):
            shard_path = self.path / shard
            if not shard_path.is_file():
                raise CheckpointError(
                    f"{index_path}: shard {shard!r} (holding tensor {names[0]!r}) does not exist in {self.path}"
                )
            file = opener(shard_path)
            self._files[shard] = file
            for name in names:
                if name not in file:
                    raise CheckpointError(f"{shard_path}: tensor {name!r} is listed in {index_path.name} but absent")
            for name in file:
                if name in holder:
                    raise CheckpointError(
                        f"{shard_path}: tensor {name!r} is also in {self.path / holder[name]} (in two shards)"
                    )
                holder[name] = shard
        self._where = dict(weight_map)

    # -- queries ----------------------------------------------------------------------------------
    @property
    def _names(self) -> Mapping[str, Any]:
        return self._where

    def _file(self, name: str) -> SafetensorsFile | _PickleFile:
        try:
            return self._files[self._where[name]]
        except KeyError:
            close = difflib.get_close_matches(name, self._where, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CheckpointError(f"{self.path}: tensor {name!r} not in this checkpoint{hint}") from None

    def info(self, name: str) -> TensorInfo:
        """Dtype, shape and byte range of ``name`` (header only)."""
        return self._file(name).info(name)

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` (a zero-copy view of its shard's memory map for safetensors)."""
        return self._file(name).get(name)

    def file_of(self, name: str) -> Path:
        """The file holding ``name``."""
        return self._file(name).path

    def files(self) -> list[Path]:
        """The weight files, sorted by name."""
        return [self.path / name for name in sorted(self._files)]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the headers."""
        return {name: self.info(name).shape for name in self._where}

    def total_bytes(self) -> int:
        """Sum of the tensors' data sizes in bytes (what a full read costs)."""
        return sum(self.info(name).nbytes for name in self._where)

    def close(self) -> None:
        """Release the files (tensors already returned stay valid)."""
        for file in self._files.values():
            file.close()
        self._files = {}
        self._where = {}

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.path)!r}, {len(self._where)} tensors in {len(self._files)} files)"
