"""The base of MoEfied routers and their registry (the concrete kinds are in :mod:`lmbricks.moefy.routers`).

A :class:`MoefiedRouter` speaks the vocabulary of :class:`lmbricks.moe.routers.Router`:
``num_experts``, ``hidden_size``, ``top_k``, ``logits(x)`` (T, E) and ``forward(x, mask) ->
RouterOutput``, whose slots come from a selection rule of :mod:`lmbricks.moefy.selection`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from typing_extensions import override

from lmbricks.errors import ConfigError
from lmbricks.moe.types import RouterOutput
from lmbricks.moefy.selection import share_slots, top_k_slots

if TYPE_CHECKING:
    from lmbricks.moefy.config import MoefyConfig


@dataclass(frozen=True)
class RouterFit:
    """What one layer's router is fitted from.

    Attributes:
        rows: (I, H) the layer's gate rows in expert order.
        x: (N, H) calibration FFN inputs (None when the split and the router need no data).
        target: (N, E) each expert's true output norm on them, what the oracle ranks by (None with ``x``).
        config: the MoEfication settings.
        seed: the layer's seed.
    """

    rows: Tensor
    x: Tensor | None
    target: Tensor | None
    config: MoefyConfig
    seed: int

    def data(self, name: str) -> tuple[Tensor, Tensor]:
        """``(x, target)``; ConfigError naming the router ``name`` when there is no calibration data."""
        if self.x is None or self.target is None:
            raise ConfigError(f"the {name} router is fitted on calibration data; none was given")
        return self.x, self.target


#: The MoEfied router kinds by name: what ``MoefyConfig.router`` accepts.
MOEFY_ROUTERS: dict[str, type[MoefiedRouter]] = {}


def register_moefy_router(name: str, reference: str) -> Callable[[type[MoefiedRouter]], type[MoefiedRouter]]:
    """Class decorator: make a :class:`MoefiedRouter` selectable by ``name`` in ``MoefyConfig.router``.

    Args:
        name: the name configs and saved directories use (the class's ``kind``).
        reference: the paper or page it follows (the class's ``reference``).
    """

    def wrap(cls: type[MoefiedRouter]) -> type[MoefiedRouter]:
        cls.kind, cls.reference = name, reference
        MOEFY_ROUTERS[name] = cls
        return cls

    return wrap


class MoefiedRouter(nn.Module):
    """Scores experts (subclasses implement :meth:`logits`) and selects them by a rule.

    A registered kind also implements ``fit`` (from a :class:`RouterFit`, at conversion) and
    ``from_state`` (from its saved tensors); ``needs_data`` says whether ``fit`` uses calibration
    data, ``predicts_share`` whether the softmax of its scores is a predicted share of the FFN
    output (what dynamic K needs).

    Args:
        hidden_size: H, the FFN input width.
        num_experts: E.
        top_k: experts per token (the top-k rule).
        dynamic_threshold: if set, the dynamic-K rule: per token the fewest experts whose share of
            ``softmax(logits)`` reaches it (``top_k`` is then ignored).
    """

    kind = "router"
    reference = ""
    needs_data = True
    predicts_share = False

    def __init__(
        self, hidden_size: int, num_experts: int, top_k: int = 1, dynamic_threshold: float | None = None
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.top_k = top_k
        self.dynamic_threshold = dynamic_threshold

    @classmethod
    def fit(cls, data: RouterFit) -> MoefiedRouter:
        """The router of one layer, fitted at conversion."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Tensor], hidden_size: int, num_experts: int) -> MoefiedRouter:
        """Rebuild a router from its saved ``state_dict``."""
        router = cls(hidden_size, num_experts)
        router.load_state_dict(state)
        return router

    def logits(self, x: Tensor) -> Tensor:
        """(T, H) -> (T, E) fp32 scores (computed in the router's or the input's dtype)."""
        raise NotImplementedError

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> RouterOutput:
        """Select experts for every token.

        Args:
            x: (T, H) FFN inputs.
            mask: unused (token choice is per token; kept for the ``Router`` signature).

        Returns:
            RouterOutput: ``indices`` (T, k) best-scored first; ``mask`` (T, k) for dynamic K (None
            for top-k); ``weights`` (T, k) exactly 1 where routed (0 where not), with the gradient
            of ``sigmoid(logit)`` (a straight-through gate); ``logits`` (T, E); ``probs`` (T, E)
            their softmax.
        """
        logits = self.logits(x)  # (T, E) fp32
        probs = logits.softmax(dim=-1)
        slots: Tensor | None = None
        if self.dynamic_threshold is not None:
            indices, slots = share_slots(probs, self.dynamic_threshold)
        else:
            indices = top_k_slots(logits, self.top_k)
        if logits.requires_grad:  # learning (healing): a straight-through gate
            soft = logits.gather(1, indices).sigmoid()  # (T, k)
            weights = (soft - soft.detach()) + 1.0  # exactly 1, with the gradient of sigmoid(score)
        else:
            weights = torch.ones(indices.shape, device=logits.device)
        if slots is not None:
            weights = weights * slots
        return RouterOutput(weights=weights, indices=indices, logits=logits, probs=probs, mask=slots)
