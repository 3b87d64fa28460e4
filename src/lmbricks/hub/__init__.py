"""Model references: registry names, Hugging Face directories and GGUF files; fetch and cache."""

from lmbricks.hub.fetch import fetch_model, sha256_file
from lmbricks.hub.registry import REGISTRY, ModelSpec, get_spec
from lmbricks.hub.resolve import DEFAULT_MODEL, load_hf_model, load_tokenizer, reference_paths, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "ModelSpec",
    "fetch_model",
    "get_spec",
    "load_hf_model",
    "load_tokenizer",
    "reference_paths",
    "resolve_model",
    "sha256_file",
]
