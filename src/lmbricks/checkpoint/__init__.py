"""Checkpoint I/O: lazy safetensors reading, atomic sharded writing, provenance, architecture maps.

- :class:`SafetensorsFile` / :class:`CheckpointReader`: headers are read and validated first; tensors
  are zero-copy views of memory-mapped files, read only when used.
- :func:`atomic_directory`, :class:`ShardedWriter`, :func:`save_state_dict`: outputs appear whole or
  not at all, in shards of bounded size, loadable by ``transformers``.
- :func:`check_output`: the input guard every writer runs first (no input is ever modified, replaced
  or deleted; ``force`` replaces only what lmbricks wrote); :func:`find_stale_temps` /
  :func:`remove_stale_temps`: the leftovers of killed writers (``lmbricks clean``).
- :func:`content_hash`, :func:`write_provenance`, :func:`copy_tokenizer`: ``lmbricks.json`` and friends.
- :func:`architecture_of`, :func:`tensor_role`, :func:`expected_tensors`, :func:`validate_checkpoint`,
  :func:`inventory`: what each tensor of llama, mistral, qwen2, gemma3, mixtral and qwen2_moe is.
"""

from __future__ import annotations

from lmbricks.checkpoint.archmap import (
    MOE_ARCHS,
    ROLE_KINDS,
    SUPPORTED,
    TensorRole,
    architecture_of,
    expected_tensors,
    inventory,
    is_moe_layer,
    tensor_role,
)
from lmbricks.checkpoint.atomic import atomic_directory, clean_stale_temps, fsync_tree
from lmbricks.checkpoint.cleanup import StaleTemp, find_stale_temps, remove_stale_temps
from lmbricks.checkpoint.guard import check_apart, check_output, check_replaceable, owned_by_lmbricks
from lmbricks.checkpoint.provenance import (
    PROVENANCE_FILE,
    TOKENIZER_FILES,
    content_hash,
    copy_tokenizer,
    write_provenance,
)
from lmbricks.checkpoint.reader import CheckpointReader, allow_pickles, pickles_allowed
from lmbricks.checkpoint.safetensors_file import (
    SAFETENSORS_DTYPES,
    TORCH_TO_SAFETENSORS,
    SafetensorsFile,
    TensorInfo,
    dtype_size,
)
from lmbricks.checkpoint.validate import validate_checkpoint, verify_checkpoint
from lmbricks.checkpoint.writer import ShardedWriter, parse_size, save_state_dict

__all__ = [
    "MOE_ARCHS",
    "PROVENANCE_FILE",
    "ROLE_KINDS",
    "SAFETENSORS_DTYPES",
    "SUPPORTED",
    "TOKENIZER_FILES",
    "TORCH_TO_SAFETENSORS",
    "CheckpointReader",
    "allow_pickles",
    "pickles_allowed",
    "SafetensorsFile",
    "ShardedWriter",
    "StaleTemp",
    "TensorInfo",
    "TensorRole",
    "architecture_of",
    "atomic_directory",
    "check_apart",
    "check_output",
    "check_replaceable",
    "clean_stale_temps",
    "content_hash",
    "copy_tokenizer",
    "dtype_size",
    "expected_tensors",
    "find_stale_temps",
    "fsync_tree",
    "inventory",
    "is_moe_layer",
    "owned_by_lmbricks",
    "parse_size",
    "remove_stale_temps",
    "save_state_dict",
    "tensor_role",
    "validate_checkpoint",
    "verify_checkpoint",
    "write_provenance",
]
