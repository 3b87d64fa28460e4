"""Model references: registry names, Hugging Face directories and GGUF files; fetch and cache."""

from lmbricks.hub.registry import REGISTRY, ModelSpec, get_spec
from lmbricks.hub.resolve import DEFAULT_MODEL, resolve_model

__all__ = ["DEFAULT_MODEL", "REGISTRY", "ModelSpec", "get_spec", "resolve_model"]
