"""Per-domain perplexity of a sparse model together with its routing histogram (one forward pass).

:class:`RoutingCounter` wraps an :class:`lmbricks.nn.LM` and counts, per MoE layer, how many
(token, slot) pairs went to each expert in every forward pass it sees; the perplexity evaluation
runs through it unchanged. Windows are scored one at a time so no padding token is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.eval.perplexity import PplResult, evaluate_text


class RoutingCounter(nn.Module):
    """Pass-through wrapper that accumulates expert selection counts (L_moe, E) from MoE aux outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.counts: Tensor | None = None

    def reset(self) -> None:
        self.counts = None

    def forward(self, input_ids: Tensor) -> Any:
        out = self.model(input_ids)
        aux = getattr(out, "aux", None) or []
        if aux:
            e = int(aux[0].router_logits.shape[-1])
            rows = []
            for a in aux:
                idx = a.indices.reshape(-1)
                rows.append(torch.bincount(idx[idx >= 0], minlength=e))  # (E,)
            c = torch.stack(rows).cpu()  # (L_moe, E)
            self.counts = c if self.counts is None else self.counts + c
        return out


@dataclass
class DomainEval:
    """Perplexity of one domain and, for a sparse model, its routing counts (L_moe, E) or None."""

    result: PplResult
    counts: Tensor | None

    def shares(self) -> Tensor | None:
        """(E,) share of routed pairs per expert, averaged over MoE layers."""
        if self.counts is None:
            return None
        c = self.counts.float()
        return (c / c.sum(-1, keepdim=True).clamp_min(1)).mean(0)

    def shares_list(self) -> list[float]:
        """:meth:`shares` as a list ([] for a dense model)."""
        s = self.shares()
        return [] if s is None else [float(x) for x in s]


def evaluate_routed(
    model: nn.Module,
    tokenizer: Any,
    domains: Sequence[str],
    max_bytes: int,
    split: str = "test",
    seq_len: int = 1024,
) -> dict[str, DomainEval]:
    """Per-domain perplexity and bits per byte (the same numbers as ``evaluate_domains``) plus routing.

    Args:
        model: an LM (dense: counts stay None).
        tokenizer: its tokenizer.
        domains: corpus domains.
        max_bytes: held-out bytes per domain (a deterministic prefix of the split).
        split: the split scored.
        seq_len: scoring window.

    Returns:
        ``{domain: DomainEval}``.
    """
    from lmbricks.data import domain_text

    counter = RoutingCounter(model)
    out = {}
    with torch.no_grad():
        for d in domains:
            counter.reset()
            res = evaluate_text(counter, tokenizer, domain_text(d, split, max_bytes), seq_len=seq_len, batch_size=1)
            out[d] = DomainEval(res, counter.counts)
    return out


def with_top_k(model: Any, k: int) -> Any:
    """Set the experts-per-token of every softmax top-k router of an LM in place (routers are shared
    between k values: the rows stay, only the selection changes). Returns the model."""
    from lmbricks.errors import ConfigError
    from lmbricks.grow.build import moe_layers
    from lmbricks.nn.model import LM

    if not isinstance(model, LM):
        raise ConfigError(f"with_top_k needs an lmbricks LM, got {type(model).__name__}")
    layers = moe_layers(model)
    if not layers:
        raise ConfigError("the model has no MoE layer")
    for layer in layers.values():
        if k > layer.config.num_experts:
            raise ConfigError(f"top_k ({k}) exceeds the number of experts ({layer.config.num_experts})")
        layer.config.top_k = k
        setattr(layer.router, "top_k", k)  # noqa: B010 - every token-choice router keeps its k here
    if model.cfg.moe is not None:
        model.cfg.moe["top_k"] = k
    return model
