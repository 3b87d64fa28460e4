"""Capture a RoutingTrace: tokenise documents by domain, run the model once per document, collect."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from lmbricks.errors import ConfigError
from lmbricks.trace.tracers import Tracer, find_tracer
from lmbricks.trace.types import LayerRouting, RoutingTrace


def tokenize_domains(
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]],
    max_tokens: int = 256,
    min_tokens: int = 8,
    docs_per_domain: int | None = None,
) -> tuple[list[list[int]], list[str]]:
    """Token ids of each document, cut to ``max_tokens``; documents shorter than ``min_tokens`` are skipped.

    Args:
        tokenizer: a Hugging Face tokenizer (no special tokens are added).
        texts: ``{domain: [document text, ...]}``.
        max_tokens: keep the first ``max_tokens`` tokens of each document.
        min_tokens: skip documents with fewer tokens (too short to have a routing profile).
        docs_per_domain: keep at most this many documents per domain (the first ones).

    Returns:
        ``(documents, domains)``: token id lists and the domain of each.

    Raises:
        ConfigError: a domain is left without any document.
    """
    if max_tokens < 2 or min_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 2 and min_tokens >= 1 (got {max_tokens}, {min_tokens})")
    docs: list[list[int]] = []
    domains: list[str] = []
    for domain, items in texts.items():
        kept = 0
        for text in items:
            if docs_per_domain is not None and kept >= docs_per_domain:
                break
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:max_tokens]
            if len(ids) < min_tokens:
                continue
            docs.append([int(i) for i in ids])
            domains.append(domain)
            kept += 1
        if kept == 0:
            raise ConfigError(f"domain {domain!r}: no document with at least {min_tokens} tokens")
    return docs, domains


@torch.no_grad()
def capture_routing(
    model: Any,
    documents: Sequence[Sequence[int]],
    domains: Sequence[str],
    tracer: Tracer | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> RoutingTrace:
    """Run ``model`` on the documents and record every routed layer.

    Documents go in batches, right-padded (pads come after the real tokens, so causal attention
    leaves the real tokens unchanged and the pads' routing is dropped); one at a time when the
    tracer is not ``batchable``.

    Args:
        model: a routed model in eval mode (see :mod:`lmbricks.trace.tracers` for the families).
        documents: token id lists, one per document.
        domains: the domain of each document.
        tracer: how to read the routing; default :func:`find_tracer(model) <find_tracer>`.
        batch_size: documents per forward pass.
        progress: called with ``(done, total)`` documents after each batch.

    Returns:
        The RoutingTrace (indices and weights on the CPU).

    Raises:
        ConfigError: lengths differ, an empty document, or layers change between batches.
    """
    _check_documents(documents, domains, batch_size)
    tracer = tracer or find_tracer(model)
    per_doc = _route_documents(model, documents, tracer, batch_size, progress)
    layers = [r.layer for r in per_doc[0]]
    experts = {r.num_experts for routing in per_doc for r in routing}
    k = max(r.indices.shape[1] for routing in per_doc for r in routing)
    for routing in per_doc:
        if [r.layer for r in routing] != layers:
            raise ConfigError("the routed layers differ between documents")
    if len(experts) != 1:
        raise ConfigError(f"routed layers have different expert counts {sorted(experts)}; trace them separately")
    indices = torch.cat([_stack(routing, k, "indices") for routing in per_doc], dim=1)  # (L, N, k)
    weights = torch.cat([_stack(routing, k, "weights") for routing in per_doc], dim=1)  # (L, N, k)
    return RoutingTrace(
        indices=indices,
        weights=weights,
        token_ids=torch.tensor([t for doc in documents for t in doc], dtype=torch.long),
        doc_ids=torch.cat([torch.full((len(doc),), i, dtype=torch.long) for i, doc in enumerate(documents)]),
        doc_domains=list(domains),
        layers=layers,
        num_experts=experts.pop(),
        source=tracer.name,
    )


def _check_documents(documents: Sequence[Sequence[int]], domains: Sequence[str], batch_size: int) -> None:
    if len(documents) != len(domains):
        raise ConfigError(f"{len(documents)} documents but {len(domains)} domains")
    if not documents:
        raise ConfigError("capture_routing needs at least one document")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")
    for i, doc in enumerate(documents):
        if len(doc) == 0:
            raise ConfigError(f"document {i} ({domains[i]}) has no tokens")


def _route_documents(
    model: Any,
    documents: Sequence[Sequence[int]],
    tracer: Tracer,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> list[list[LayerRouting]]:
    """Each document's routing per layer, without its padding (batches when the tracer allows)."""
    step = batch_size if getattr(tracer, "batchable", False) else 1
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    per_doc: list[list[LayerRouting]] = []
    for start in range(0, len(documents), step):
        batch = [list(d) for d in documents[start : start + step]]
        t = max(len(d) for d in batch)
        ids = torch.zeros(len(batch), t, dtype=torch.long)  # (B, T), right-padded with id 0
        for j, doc in enumerate(batch):
            ids[j, : len(doc)] = torch.tensor(doc)
        routing = tracer(model, ids.to(device))
        if not routing:
            raise ConfigError(f"tracer {tracer.name} found no routed layer in {type(model).__name__}")
        for r in routing:
            if r.indices.shape[0] != len(batch) * t:
                raise ConfigError(
                    f"layer {r.layer}: {r.indices.shape[0]} routed tokens for {len(batch)} x {t} input tokens"
                )
        for j, doc in enumerate(batch):  # each document's rows, without its padding
            rows = slice(j * t, j * t + len(doc))
            per_doc.append([LayerRouting(r.layer, r.indices[rows], r.weights[rows], r.num_experts) for r in routing])
        if progress is not None:
            progress(len(per_doc), len(documents))
    return per_doc


def _stack(routing: list[LayerRouting], k: int, field: str) -> torch.Tensor:
    """(L, T, k) from one document's layers, slots padded with -1 / 0 where a layer routes fewer."""
    out = []
    for r in routing:
        x = getattr(r, field).cpu()
        if x.shape[1] < k:
            pad = torch.full((x.shape[0], k - x.shape[1]), -1 if field == "indices" else 0, dtype=x.dtype)
            x = torch.cat([x, pad], dim=1)
        out.append(x.long() if field == "indices" else x.float())
    return torch.stack(out)
