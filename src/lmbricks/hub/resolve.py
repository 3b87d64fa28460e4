"""Turn a model reference (registry name, Hugging Face directory, ``.gguf`` file) into a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmbricks.paths as paths
from lmbricks.errors import ConfigError
from lmbricks.hub.fetch import Progress, _quiet, convert_gguf, fetch_model, sha256_file
from lmbricks.hub.hf_compat import quiet_loading
from lmbricks.hub.registry import REGISTRY, get_spec
from lmbricks.hub.threshold import activation_threshold, restore_threshold

DEFAULT_MODEL = "smollm2-135m-instruct"


def resolve_model(ref: str | Path = DEFAULT_MODEL, fetch: bool = True, progress: Progress = _quiet) -> Path:
    """Resolve a model reference to a Hugging Face directory on disk.

    Args:
        ref: a registry name (``smollm2-135m-instruct``), a directory with ``config.json``, or a
            ``.gguf`` file (converted once into the cache, keyed by its hash).
        fetch: download registry models that are not cached yet.
        progress: callback receiving one-line status messages.

    Returns:
        Path to a directory with config.json, safetensors weights and tokenizer files.

    Raises:
        ConfigError: the reference is neither a known name, a model directory nor a GGUF file.
    """
    text = str(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ConfigError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"{path}: GGUF file not found")
        digest = sha256_file(path)[:16]
        out = paths.models_dir() / f"gguf-{path.stem}-{digest}"
        if (out / "config.json").exists():
            return out
        return convert_gguf(path, out, progress=progress)
    if text in REGISTRY:
        cached = paths.models_dir() / text
        if (cached / "config.json").exists():
            return cached
        if not fetch:
            raise ConfigError(f"{text} is not cached; run: lmbricks models fetch {text}")
        return fetch_model(get_spec(text), progress=progress)
    if "/" in text or text.startswith("."):
        raise ConfigError(f"{text}: no such model directory or GGUF file")
    get_spec(text)  # raises UnknownNameError listing the known names
    raise AssertionError("unreachable")


def reference_paths(ref: str | Path | None) -> list[Path]:
    """The paths on disk that a model reference names, without fetching or converting anything.

    Used by the input guard (:func:`lmbricks.checkpoint.check_output`) before any work: a directory
    or file is itself; a registry name is its cache directory; a ``path+adapter`` reference (merge
    and grow recipes) names both parts. Paths that do not exist are returned too (the guard skips
    them).

    Args:
        ref: a model reference, or None (no paths).

    Returns:
        The paths, most specific first.
    """
    if ref is None or str(ref) == "":
        return []
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists() or path.is_symlink():
        return [path]
    if text in REGISTRY:
        return [paths.models_dir() / text]
    if "+" in text:
        model, adapter = text.rsplit("+", 1)
        return [*reference_paths(model), Path(adapter).expanduser()]
    return [path]


def load_tokenizer(ref: str | Path = DEFAULT_MODEL) -> Any:
    """Load the tokenizer of a model reference (fetching the model if needed)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(ref))


def load_hf_model(
    ref: str | Path = DEFAULT_MODEL, dtype: Any = None, allow_pickle: bool | None = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` with transformers from any model reference (eval mode, fp32 default).

    The weights are checked by lmbricks' reader first (:func:`lmbricks.checkpoint.verify_checkpoint`):
    a truncated file or a pickle without ``allow_pickle`` (None: :func:`~lmbricks.checkpoint.allow_pickles`)
    is a :class:`~lmbricks.errors.CheckpointError` naming the file, not a traceback from transformers.
    A ReLU-fied model (``lmbricks sparsify relufy``) gets its FATReLU threshold back
    (:mod:`lmbricks.hub.threshold`): transformers alone would compute plain ReLU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmbricks.checkpoint import verify_checkpoint

    path = resolve_model(ref)
    verify_checkpoint(path, allow_pickle)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, weights_only=True)
    restore_threshold(model, activation_threshold(path))  # a ReLU-fied model's FATReLU, not plain relu
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)
