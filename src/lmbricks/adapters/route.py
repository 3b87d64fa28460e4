"""Choose bricks per input: each brick's domain is the base model's mean hidden state over its text.

A :class:`Router` holds one centroid per brick (the mean, over tokens, of a layer's hidden states
of the base model on the brick's training text). An input is embedded the same way and sent to
the brick whose centroid is most similar (cosine, after subtracting the mean of the centroids,
which removes the direction all texts share); top-k routing weights the k best by a softmax of the
similarities.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmbricks.errors import ConfigError


@torch.no_grad()
def mean_hidden(model: Any, ids: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Mean over tokens of one layer's hidden states.

    Args:
        model: a transformers causal LM (or PEFT model around one).
        ids: (T,) or (1, T) token ids.
        layer: index into ``hidden_states`` (0: embeddings, -1: the last layer's normalised output).

    Returns:
        (H,) float32.
    """
    ids = ids.reshape(1, -1)
    if ids.shape[1] == 0:
        raise ConfigError("cannot route an empty input")
    out = model(input_ids=ids, output_hidden_states=True)
    return out.hidden_states[layer][0].float().mean(dim=0)  # (H,)


def text_ids(tokenizer: Any, text: str, max_tokens: int) -> torch.Tensor:
    """(T,) token ids of ``text``, at most ``max_tokens``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return torch.tensor(ids, dtype=torch.long)


@dataclass
class Router:
    """Nearest-centroid brick router.

    Attributes:
        names: brick names, one per centroid.
        centroids: (K, H) mean hidden states.
        layer: the hidden layer used.
    """

    names: list[str]
    centroids: torch.Tensor
    layer: int = -1

    def __post_init__(self) -> None:
        if len(self.names) != self.centroids.shape[0] or not self.names:
            raise ConfigError(f"router: {len(self.names)} names for {self.centroids.shape[0]} centroids")

    @property
    def center(self) -> torch.Tensor:
        return self.centroids.mean(dim=0)  # (H,)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of (N, H) embeddings to each centroid, both centred: (N, K)."""
        c = F.normalize(self.centroids - self.center, dim=-1)  # (K, H)
        x = F.normalize(h.reshape(-1, h.shape[-1]).float() - self.center, dim=-1)  # (N, H)
        return x @ c.T

    def route(self, h: torch.Tensor, top_k: int = 1, temperature: float = 0.1) -> list[list[tuple[str, float]]]:
        """For each embedding, the ``top_k`` bricks and their weights (softmax of similarity / temperature).

        Returns:
            One list of ``(name, weight)`` per row of ``h``, best first; weights sum to 1.
        """
        if not 1 <= top_k <= len(self.names):
            raise ConfigError(f"top_k must be in [1, {len(self.names)}], got {top_k}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        s = self.scores(h)
        vals, idx = s.topk(top_k, dim=-1)  # (N, k)
        w = torch.softmax(vals / temperature, dim=-1)
        return [
            [(self.names[int(i)], float(x)) for i, x in zip(ri, rw, strict=False)]
            for ri, rw in zip(idx, w, strict=False)
        ]

    def save(self, path: str | Path) -> None:
        """Write the router as JSON (centroids as lists; small: K x hidden floats)."""
        data = {"names": self.names, "layer": self.layer, "centroids": self.centroids.tolist()}
        Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Router:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(list(data["names"]), torch.tensor(data["centroids"], dtype=torch.float32), int(data["layer"]))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"{path}: not a router file ({exc})") from None


def fit_router(
    model: Any,
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]],
    *,
    layer: int = -1,
    max_tokens: int = 2048,
    doc_tokens: int = 256,
    on_brick: Callable[[str], None] | None = None,
) -> Router:
    """Centroid of each brick: mean over documents of the mean hidden state (documents cut to ``doc_tokens``).

    Args:
        model: the base model (no brick active).
        tokenizer: its tokenizer.
        texts: ``{brick name: training documents}``.
        layer: hidden layer (see :func:`mean_hidden`).
        max_tokens: tokens per brick used in total.
        doc_tokens: tokens per document (documents are embedded one by one, as prompts will be).

    Returns:
        The :class:`Router`.
    """
    names, rows = [], []
    for name, docs in texts.items():
        if on_brick is not None:
            on_brick(name)
        embs, used = [], 0
        for doc in docs:
            if used >= max_tokens:
                break
            ids = text_ids(tokenizer, doc, min(doc_tokens, max_tokens - used))
            if ids.numel() == 0:
                continue
            embs.append(mean_hidden(model, ids, layer))
            used += ids.numel()
        if not embs:
            raise ConfigError(f"brick {name!r}: no text to compute its centroid")
        names.append(name)
        rows.append(torch.stack(embs).mean(dim=0))
    return Router(names, torch.stack(rows), layer)
