"""RoutingTrace: which experts every token of every document chose, layer by layer.

One flat layout for every routed model (Hugging Face MoE, lmbricks MoE, MoEfied models, adapter
routing): tokens of all documents are concatenated (documents contiguous, in order) and every traced
layer keeps k (expert, weight) slots per token. Statistics in :mod:`lmbricks.trace.stats`,
:mod:`lmbricks.trace.consecutive` and :mod:`lmbricks.trace.topic` are pure functions of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lmbricks.errors import CheckpointError, ConfigError


@dataclass
class LayerRouting:
    """One layer's routing decisions for the T tokens of one forward pass (what a tracer returns).

    Attributes:
        layer: the model's layer number (0-based position in the decoder stack).
        indices: (T, k) long expert of each (token, slot) pair; -1 where the pair was not routed.
        weights: (T, k) float gate of each pair (0 where not routed).
        num_experts: E, the number of experts the router chooses from.
    """

    layer: int
    indices: Tensor
    weights: Tensor
    num_experts: int


@dataclass
class RoutingTrace:
    """Routing decisions of one model over D documents, N tokens in all, L traced layers.

    Attributes:
        indices: (L, N, k) long expert of each (token, slot) pair; -1 where not routed (capacity
            drops, expert-choice routing).
        weights: (L, N, k) fp32 gate of each pair (0 where not routed).
        token_ids: (N,) long token id of each token.
        doc_ids: (N,) long document (0..D-1) of each token; non-decreasing.
        doc_domains: the domain of each document (length D).
        layers: the model's layer number of each traced layer (length L).
        num_experts: E.
        source: name of the tracer that captured it (e.g. ``hf-router-hooks``).
    """

    indices: Tensor
    weights: Tensor
    token_ids: Tensor
    doc_ids: Tensor
    doc_domains: list[str]
    layers: list[int]
    num_experts: int
    source: str = ""

    def __post_init__(self) -> None:
        if self.indices.dim() != 3 or self.weights.shape != self.indices.shape:
            raise ConfigError(
                f"RoutingTrace.indices must be (L, N, k) and weights the same shape; got "
                f"{tuple(self.indices.shape)} and {tuple(self.weights.shape)}"
            )
        n = self.indices.shape[1]
        if self.token_ids.shape != (n,) or self.doc_ids.shape != (n,):
            raise ConfigError(
                f"RoutingTrace.token_ids and doc_ids must be ({n},); got "
                f"{tuple(self.token_ids.shape)} and {tuple(self.doc_ids.shape)}"
            )
        if len(self.layers) != self.indices.shape[0]:
            raise ConfigError(f"RoutingTrace.layers has {len(self.layers)} entries for {self.indices.shape[0]} layers")
        if n and (int(self.doc_ids.max()) >= len(self.doc_domains) or bool((self.doc_ids.diff() < 0).any())):
            raise ConfigError("RoutingTrace.doc_ids must be non-decreasing and index doc_domains")
        if self.indices.numel() and int(self.indices.max()) >= self.num_experts:
            raise ConfigError(f"RoutingTrace.indices has an expert >= num_experts={self.num_experts}")

    @property
    def num_layers(self) -> int:
        return int(self.indices.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.indices.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.indices.shape[2])

    @property
    def num_docs(self) -> int:
        return len(self.doc_domains)

    @property
    def domains(self) -> list[str]:
        """The distinct domains, in order of first appearance."""
        return list(dict.fromkeys(self.doc_domains))

    def token_domains(self) -> Tensor:
        """(N,) long: index into :attr:`domains` of each token's domain."""
        position = {d: i for i, d in enumerate(self.domains)}
        per_doc = torch.tensor([position[d] for d in self.doc_domains], dtype=torch.long)
        return per_doc[self.doc_ids] if self.num_tokens else per_doc[:0]

    def doc_offsets(self) -> Tensor:
        """(D + 1,) long: document d's tokens are ``offsets[d]:offsets[d + 1]``."""
        counts = torch.bincount(self.doc_ids, minlength=self.num_docs)
        return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    def top1(self) -> Tensor:
        """(L, N) long: each token's first-choice expert (the routed slot of largest weight), -1 if none."""
        w = self.weights.masked_fill(self.indices < 0, float("-inf"))  # (L, N, k)
        slot = w.argmax(-1, keepdim=True)  # (L, N, 1)
        best = self.indices.gather(-1, slot).squeeze(-1)  # (L, N)
        return best

    def layer_position(self, layer: int) -> int:
        """Index on the L axis of model layer ``layer`` (ConfigError listing the traced layers)."""
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} is not routed/traced; traced layers: {self.layers}")
        return self.layers.index(layer)

    def save(self, path: str | Path) -> Path:
        """Write the trace to a ``.pt`` file (tensors, lists and ints only; read with :meth:`load`)."""
        path = Path(path)
        torch.save(
            {
                "indices": self.indices,
                "weights": self.weights,
                "token_ids": self.token_ids,
                "doc_ids": self.doc_ids,
                "doc_domains": list(self.doc_domains),
                "layers": list(self.layers),
                "num_experts": self.num_experts,
                "source": self.source,
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> RoutingTrace:
        """Read a trace written by :meth:`save` (``weights_only`` loading: no code runs)."""
        try:
            state = torch.load(Path(path), weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a routing trace ({exc})") from None
        return cls(**state)


def concat_traces(traces: Sequence[RoutingTrace]) -> RoutingTrace:
    """Concatenate traces of the same model (same layers and experts) into one, documents renumbered.

    Args:
        traces: at least one trace; all with the same ``layers``, ``num_experts`` and top-k.

    Returns:
        One RoutingTrace with the documents of all of them, in order.
    """
    if not traces:
        raise ConfigError("concat_traces needs at least one trace")
    first = traces[0]
    for t in traces[1:]:
        if t.layers != first.layers or t.num_experts != first.num_experts or t.top_k != first.top_k:
            raise ConfigError("concat_traces: traces differ in layers, num_experts or top-k")
    shift = 0
    doc_ids = []
    for t in traces:
        doc_ids.append(t.doc_ids + shift)
        shift += t.num_docs
    return RoutingTrace(
        indices=torch.cat([t.indices for t in traces], dim=1),
        weights=torch.cat([t.weights for t in traces], dim=1),
        token_ids=torch.cat([t.token_ids for t in traces]),
        doc_ids=torch.cat(doc_ids),
        doc_domains=[d for t in traces for d in t.doc_domains],
        layers=list(first.layers),
        num_experts=first.num_experts,
        source=first.source,
    )
