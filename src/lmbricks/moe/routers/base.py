"""Router base class and registry: a router maps tokens (T, H) to a RouterOutput."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import Self

from lmbricks.errors import UnknownNameError
from lmbricks.moe.types import RouterOutput

if TYPE_CHECKING:
    from lmbricks.moe.config import MoEConfig


@dataclass(frozen=True)
class RouterEntry:
    name: str
    cls: type[Router]
    reference: str


ROUTERS: dict[str, RouterEntry] = {}


def register_router(name: str, reference: str) -> Callable[[type[Router]], type[Router]]:
    """Class decorator: make a router buildable, and selectable, by name from ``MoEConfig.router``.

    Args:
        name: the name configs select it by.
        reference: the paper or code it follows (listed in docs and ``--help``).
    """

    def wrap(cls: type[Router]) -> type[Router]:
        ROUTERS[name] = RouterEntry(name, cls, reference)
        cls.name = name
        return cls

    return wrap


class Router(nn.Module):
    """A linear gate (weight (E, H), the Hugging Face layout) plus a selection rule.

    Subclasses implement ``forward(x, mask) -> RouterOutput``, and ``from_config`` when their
    constructor takes more than the gate's shape and jitter. Logits are computed in fp32 whatever
    the input dtype (Switch's selective precision).
    """

    name = "router"
    # What MoEConfig checks for this router: token-choice routers pick top_k experts per token (and
    # a capacity can drop pairs); a router may require one top_k; bias-balanced routers take
    # bias_update_rate (aux-loss-free balancing).
    token_choice = True
    fixed_top_k: int | None = None
    balances_by_bias = False

    def __init__(self, hidden_size: int, num_experts: int, jitter: float = 0.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.jitter = jitter
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)

    @classmethod
    def from_config(cls, config: MoEConfig) -> Self:
        """The router of ``config``: by default its gate shape and jitter (routers with options override)."""
        return cls(config.hidden_size, config.num_experts, jitter=config.router_jitter)

    def logits(self, x: Tensor) -> Tensor:
        """(T, H) -> (T, E) fp32 logits; multiplicative jitter U(1-eps, 1+eps) on x in training."""
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        with torch.autocast(x.device.type, enabled=False):  # fp32 even inside a bf16 autocast region
            return F.linear(x.float(), self.gate.weight.float())

    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:  # pragma: no cover
        raise NotImplementedError


def build_router(config: MoEConfig) -> Router:
    """The router named by ``config.router``."""
    entry = ROUTERS.get(config.router)
    if entry is None:
        raise UnknownNameError(f"unknown router {config.router!r} (known: {', '.join(sorted(ROUTERS))})")
    return entry.cls.from_config(config)


def topk_gates(probs: Tensor, k: int, renormalize: bool) -> tuple[Tensor, Tensor]:
    """Top-k of (T, E) probabilities -> weights (T, k) fp32, indices (T, k) long."""
    weights, indices = probs.topk(k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, indices
