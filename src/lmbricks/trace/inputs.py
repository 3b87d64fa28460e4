"""What a trace reads: the routed model, stored domains and the user's text files."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmbricks.errors import ConfigError


def load_routed_model(ref: str | Path) -> tuple[Any, Any, Path]:
    """Load a model for tracing.

    MoEfied directories load with :func:`lmbricks.moefy.load_moefied`, other directories with an
    ``lmbricks`` section in config.json with :func:`lmbricks.nn.load_model`;
    everything else with transformers, so Hugging Face routers are read as Hugging Face runs them.

    Returns:
        ``(model, tokenizer, path)`` in eval mode, fp32, on the CPU.
    """
    import torch

    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import read_config

    path = resolve_model(ref)
    from lmbricks.moefy import is_moefied, load_moefied

    if is_moefied(path):
        model, tok = load_moefied(path)
        return model, tok, path
    if "lmbricks" in read_config(path):
        from lmbricks.nn import load_model

        model, tok = load_model(path, dtype=torch.float32)
        return model, tok, path
    from lmbricks.hub import load_hf_model

    model, tok = load_hf_model(path, dtype=torch.float32)
    return model, tok, path


def domain_texts(
    domains: Sequence[str], split: str, loader: Callable[[str, str], list[str]] | None = None
) -> dict[str, list[str]]:
    """``{domain: texts}`` from ``loader(domain, split)`` (default :func:`lmbricks.data.load_texts`)."""
    if loader is None:
        from lmbricks.data import load_texts

        loader = load_texts
    return {d: loader(d, split) for d in domains}


def read_text_documents(path: str | Path) -> list[str]:
    """Documents from a text file (paragraphs separated by blank lines) or a folder (one ``*.txt`` file each).

    Raises:
        ConfigError: the path is missing, not UTF-8, or holds no text.
    """
    p = Path(path)
    try:
        if p.is_dir():
            docs = [f.read_text(encoding="utf-8").strip() for f in sorted(p.glob("*.txt"))]
        elif p.is_file():
            docs = [part.strip() for part in p.read_text(encoding="utf-8").split("\n\n")]
        else:
            raise ConfigError(f"{p}: no such text file or folder")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason})") from None
    docs = [d for d in docs if d]
    if not docs:
        raise ConfigError(f"{p}: no text")
    return docs


def parse_text_sources(items: Sequence[str]) -> dict[str, list[Path]]:
    """``["legal=contracts/", "legal=more.txt"]`` -> ``{"legal": [Path("contracts"), Path("more.txt")]}``.

    Raises:
        ConfigError: an item is not ``DOMAIN=PATH``.
    """
    out: dict[str, list[Path]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--texts {item!r}: expected DOMAIN=PATH")
        out.setdefault(name, []).append(Path(path))
    return out


def read_text_sources(sources: Mapping[str, Sequence[str | Path]]) -> dict[str, list[str]]:
    """``{domain: [document, ...]}`` from ``{domain: [text file or folder, ...]}`` (:func:`read_text_documents`)."""
    return {name: [doc for p in paths for doc in read_text_documents(p)] for name, paths in sources.items()}
