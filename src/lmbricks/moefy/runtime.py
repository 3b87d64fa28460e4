"""The MoEfied FFN: E experts cut from a gated FFN, the selected ones summed with weight 1.

Weights are stored in expert order: ``w_in`` (E, 2n, H) holds each expert's n gate rows then its n
up rows (one fused matmul per expert), ``w_out`` (E, n, H) its n down columns transposed, so every
expert's weights are contiguous. With all experts selected the module computes the dense FFN (the
neurons are only reordered).

Selection (``mode``):
* ``router``: the router's top-K (or a dynamic K by mass share) from the FFN input;
* ``oracle``: the K experts whose true outputs are largest (computes every expert first: an
  evaluation bound, not a speedup);
* ``dense``: all experts.

Sparse compute (router mode, no gradient): pairs (token, expert) come from the (E, N) mask's
nonzeros, already grouped by expert; tokens are gathered once, each expert runs one fused gate/up
matmul and one down matmul on its contiguous slice (``out=`` buffers), and rows are summed back with
``index_add_``. Only the selected experts' weights are read, for prefill and for one-token decoding.
For training (healing) the same function is computed densely with a neuron mask whose
straight-through gate lets the router learn from the loss.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.moefy.routers import dynamic_mask, expert_output_norms, topk_mask

Mode = Literal["router", "oracle", "dense"]


class MoefiedFFN(nn.Module):
    """A gated FFN split into ``E`` experts of ``n`` neurons.

    Args:
        w_in: (E, 2n, H) gate rows then up rows of each expert.
        w_out: (E, n, H) down columns of each expert, transposed.
        act: the gate activation (``silu`` for SwiGLU).
        router: a module mapping (N, H) inputs to (N, E) scores, or None (oracle / dense only).
        top_k: experts per token.
        dynamic_threshold: if set (router mode), the fewest experts whose predicted mass share
            (the softmax of the router's scores) reaches it; ``top_k`` is then ignored.
    """

    down_norms: Tensor

    def __init__(
        self,
        w_in: Tensor,
        w_out: Tensor,
        act: Any,
        router: nn.Module | None,
        top_k: int,
        dynamic_threshold: float | None = None,
    ) -> None:
        super().__init__()
        e, two_n, h = w_in.shape
        if w_out.shape != (e, two_n // 2, h):
            raise ConfigError(f"w_out shape {tuple(w_out.shape)} does not match w_in {tuple(w_in.shape)}")
        self.w_in = nn.Parameter(w_in.contiguous())
        self.w_out = nn.Parameter(w_out.contiguous())
        self.act = act
        self.router = router
        self.n_experts = e
        self.expert_size = two_n // 2
        self.top_k = top_k
        self.dynamic_threshold = dynamic_threshold
        self.mode: Mode = "router" if router is not None else "dense"
        self.register_buffer("down_norms", w_out.detach().float().norm(dim=-1).reshape(-1), persistent=False)
        self.last_fraction: float = 1.0  # experts used / E in the last forward (traceability)

    # ------------------------------------------------------------------ weights in HF layout
    def dense_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_gate (I, H), W_up (I, H), W_down (H, I))`` in expert order."""
        n, h = self.expert_size, self.w_in.shape[-1]
        gate = self.w_in[:, :n].reshape(-1, h)
        up = self.w_in[:, n:].reshape(-1, h)
        down = self.w_out.reshape(-1, h).T
        return gate, up, down

    @classmethod
    def from_dense(
        cls,
        gate: Tensor,
        up: Tensor,
        down: Tensor,
        n_experts: int,
        act: Any,
        router: nn.Module | None = None,
        top_k: int = 1,
        dynamic_threshold: float | None = None,
    ) -> MoefiedFFN:
        """Build from HF-layout weights already in expert order (gate, up (I, H); down (H, I))."""
        i, h = gate.shape
        if i % n_experts:
            raise ConfigError(f"experts={n_experts} does not divide the FFN width {i}")
        n = i // n_experts
        w_in = torch.cat([gate.reshape(n_experts, n, h), up.reshape(n_experts, n, h)], dim=1)
        w_out = down.T.reshape(n_experts, n, h)
        return cls(w_in, w_out, act, router, top_k, dynamic_threshold)

    # ------------------------------------------------------------------ selection
    def select(self, x: Tensor) -> Tensor:
        """(N, H) FFN inputs -> (N, E) bool mask of the experts to run (router mode)."""
        if self.router is None:
            raise ConfigError("this MoEfied FFN has no router; use mode 'oracle' or 'dense'")
        scores = self.router(x)
        if self.dynamic_threshold is not None:
            return dynamic_mask(torch.softmax(scores.float(), dim=-1), self.dynamic_threshold)
        return topk_mask(scores, self.top_k)

    def oracle_scores(self, a: Tensor) -> Tensor:
        """(N, I) activations in expert order -> (N, E) norms of the experts' outputs."""
        return expert_output_norms(a, self.w_out.detach())

    def _dense_a(self, x: Tensor) -> Tensor:
        n, h = self.expert_size, self.w_in.shape[-1]
        hid = x @ self.w_in.reshape(-1, h).T  # (N, E*2n)
        hid = hid.view(x.shape[0], self.n_experts, 2, n)
        return (self.act(hid[:, :, 0]) * hid[:, :, 1]).reshape(x.shape[0], -1)  # (N, I) expert order

    def _down(self, a: Tensor) -> Tensor:
        return a @ self.w_out.reshape(-1, self.w_out.shape[-1])  # (N, H)

    def sparse_forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Compute only the selected experts.

        Args:
            x: (N, H) inputs.
            mask: (N, E) bool selection.

        Returns:
            (N, H) the sum of the selected experts' outputs.
        """
        pairs = mask.T.nonzero()  # (S, 2) rows (expert, token), grouped by expert
        experts, tokens = pairs[:, 0], pairs[:, 1]
        counts = torch.bincount(experts, minlength=self.n_experts).tolist()
        n = self.expert_size
        xs = x.index_select(0, tokens)  # (S, H)
        hid = x.new_empty(xs.shape[0], 2 * n)
        rows = x.new_empty(xs.shape)
        start = 0
        for e, c in enumerate(counts):
            if c:
                torch.mm(xs[start : start + c], self.w_in[e].T, out=hid[start : start + c])
                start += c
        a = self.act(hid[:, :n]) * hid[:, n:]  # (S, n)
        start = 0
        for e, c in enumerate(counts):
            if c:
                torch.mm(a[start : start + c], self.w_out[e], out=rows[start : start + c])
                start += c
        return torch.zeros_like(x).index_add_(0, tokens, rows)

    def forward(self, x: Tensor) -> Tensor:
        """(..., H) -> (..., H)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.mode == "dense":
            self.last_fraction = 1.0
            return self._down(self._dense_a(flat)).view(shape)
        if self.mode == "oracle":
            a = self._dense_a(flat)
            mask = topk_mask(self.oracle_scores(a), self.top_k)
            self.last_fraction = float(mask.float().mean())
            keep = mask.repeat_interleave(self.expert_size, dim=1).to(a.dtype)
            return self._down(a * keep).view(shape)
        if self.mode != "router":
            raise ConfigError(f"mode must be 'router', 'oracle' or 'dense', got {self.mode!r}")
        if self.training and torch.is_grad_enabled():
            return self._train_forward(flat).view(shape)
        mask = self.select(flat)
        self.last_fraction = float(mask.float().mean())
        return self.sparse_forward(flat, mask).view(shape)

    def _train_forward(self, x: Tensor) -> Tensor:
        """Differentiable equivalent of the sparse path: a neuron mask with a straight-through gate.

        The forward value is the sum of the selected experts (gate = 1); the router receives the
        gradient of ``sigmoid(score)`` as if each expert's output were scaled by it.
        """
        assert self.router is not None
        scores = self.router(x)
        mask = self.select(x).to(x.dtype)
        soft = torch.sigmoid(scores.float()).to(x.dtype)
        gate = mask * (1.0 + soft - soft.detach())  # value: mask; gradient: through the sigmoid
        self.last_fraction = float(mask.mean())
        a = self._dense_a(x) * gate.repeat_interleave(self.expert_size, dim=1)
        return self._down(a)
