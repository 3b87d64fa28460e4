"""Checking a checkpoint against what its config.json implies (names, shapes, float dtypes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmbricks.checkpoint.archmap import IGNORABLE, architecture_of, expected_tensors
from lmbricks.errors import CheckpointError

if TYPE_CHECKING:
    from lmbricks.checkpoint.reader import CheckpointReader


def _floating(dtype: Any) -> bool:
    return bool(getattr(dtype, "is_floating_point", False))


def validate_checkpoint(reader: CheckpointReader) -> None:
    """Check a :class:`~lmbricks.checkpoint.CheckpointReader` against what its config implies.

    Tolerated (as transformers tolerates them on load): an extra ``lm_head.weight`` of the right
    shape when embeddings are tied, and old ``rotary_emb.inv_freq`` buffers.

    Raises:
        CheckpointError: missing, unexpected, wrong-shape or non-floating tensors; the message lists
            each problem (up to 20) with the tensor and the file.
    """
    expected = expected_tensors(reader.config)
    problems: list[str] = []
    index_or_dir = reader.path
    for name, shape in expected.items():
        if name not in reader:
            problems.append(f"{index_or_dir}: tensor {name!r} missing (expected shape {shape})")
            continue
        info = reader.info(name)
        if info.shape != shape:
            problems.append(f"{reader.file_of(name)}: tensor {name!r} has shape {info.shape}, config implies {shape}")
        if not _floating(info.dtype):
            problems.append(f"{reader.file_of(name)}: tensor {name!r} has dtype {info.dtype}, expected a float type")
    tied = "lm_head.weight" not in expected
    for name in reader:
        if name in expected or IGNORABLE.match(name):
            continue
        if tied and name == "lm_head.weight" and reader.info(name).shape == expected["model.embed_tokens.weight"]:
            continue
        problems.append(f"{reader.file_of(name)}: tensor {name!r} unexpected for this config")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointError(f"{reader.path}: checkpoint does not match config.json:\n  {shown}{more}")


def verify_checkpoint(path: Any, allow_pickle: bool | None = None) -> None:
    """Open a model directory with the validated reader and check it against its config, then close it.

    For code that hands a directory to ``transformers`` (which would fail deep inside with a
    ``SafetensorError``, or read a pickle nobody allowed): the same checks as every lmbricks reader,
    before any weight is loaded. Architectures lmbricks does not map get the file checks only.

    Raises:
        CheckpointError: a truncated or malformed file, pickles without ``allow_pickle``, tensors
            that do not match config.json (naming the file and tensor).
    """
    from lmbricks.checkpoint.reader import CheckpointReader

    with CheckpointReader(path, allow_pickle=allow_pickle) as reader:
        try:
            architecture_of(reader.config)
        except CheckpointError:
            return  # unmapped architecture: transformers will check the names and shapes
        validate_checkpoint(reader)
