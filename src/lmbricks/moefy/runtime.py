"""The MoEfied FFN: E experts cut from a gated FFN, the selected ones summed with weight 1.

Weights are stored in expert order, each expert's block contiguous and laid out for the sparse
product ``x_e @ W``: ``w_gate`` and ``w_up`` (E, H, n), ``w_down`` (E, n, H). With all experts
selected the module computes the dense FFN (the neurons are only reordered).

Selection (``mode``):
* ``router``: the experts the router selects from the FFN input (a :class:`RouterOutput`: its
  top-K, or a dynamic K by mass share; :mod:`lmbricks.moefy.selection`);
* ``oracle``: the K experts whose true outputs are largest (computes every expert first: an
  evaluation bound, not a speedup);
* ``dense``: all experts.

Shared experts (``shared_experts`` S > 0, :attr:`~lmbricks.moefy.config.MoefyConfig.shared_experts`):
experts ``0 .. S-1`` are always on; the router (or the oracle) chooses K of the other ``E - S``, so
a token runs ``S + K`` experts, and the selection mask is the routed one with S columns of ones in
front (:meth:`MoefiedFFN.full_mask`). With S = 0 nothing is prepended: the code path is the one
before shared experts.

Sparse compute (router mode, no gradient): pairs (token, expert) come from the (E, N) mask of the
router's slots (:func:`~lmbricks.moefy.selection.routed_mask`), its
nonzeros, already grouped by expert. Expert by expert, the expert's tokens are gathered, multiplied
by its gate and up blocks, activated and multiplied by its down block, and the rows are added back
with ``index_add_`` (each expert holds a token at most once), so every temporary is a few hundred
KB and stays in cache. (Running the experts concurrently, each thread single-threaded with its own
output as ``lmbricks.moe.concurrency`` does for MoE layers, measured slower here: 1.52x against
1.62x the dense FFN's speed at K = 8 of 32, 40 interleaved rounds; these experts are too small.) Up to
``FEW_TOKENS`` tokens (decoding) the experts any token selected run as one batched product instead.
Only the selected experts' weights are read, for prefill and for one-token decoding. (Measured on
the default model's shapes, 1024 tokens, K = 8 of 32, before concurrency: separate contiguous (H, n)
gate and up blocks 18-19 ms, one fused (2n, H) block with a transposed product 22 ms, one gather of
all pairs before the loop and one scatter after it 23 ms, and 69 ms at K = 16 where the (S, H) pair
buffers pass glibc's mmap threshold; the dense FFN 28 ms.)
Zero-skipping (``skip_zeros``, on by default where the gate activation is of the ReLU family,
:func:`~lmbricks.moefy.zeroskip.zeroes_nonpositive`): neurons whose gate activation is exactly
zero skip their up and down work, at decoding the live neurons of the selected experts only,
at prefill an expert's dead tokens and dead neurons (:mod:`lmbricks.moefy.zeroskip`); the result
is the same sum without the zero terms.
For training (healing) the same function is computed densely, each neuron scaled by its expert's
gate from the router's weights (value 1, gradient of ``sigmoid(score)``: a straight-through gate
that lets the router learn from the loss).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.moe.types import RouterOutput
from lmbricks.moefy.routers import MoefiedRouter, expert_output_norms
from lmbricks.moefy.selection import routed_gates, routed_mask, topk_mask
from lmbricks.moefy.zeroskip import expert_forward, live_neuron_forward, zeroes_nonpositive

Mode = Literal["router", "oracle", "dense"]

# Up to this many tokens (decoding) the selected experts run as one batched product: their weights
# are gathered (a few hundred KB each), where the expert loop issues seven small kernels per expert
# (measured on the default model's shapes, K = 8 of 32: 4 tokens 0.97 ms vs 1.93 ms).
FEW_TOKENS = 4


class MoefiedFFN(nn.Module):
    """A gated FFN split into ``E`` experts of ``n`` neurons.

    Args:
        w_gate: (E, H, n) each expert's gate rows, transposed.
        w_up: (E, H, n) each expert's up rows, transposed.
        w_down: (E, n, H) each expert's down columns, transposed.
        act: the gate activation (``silu`` for SwiGLU).
        router: the :class:`~lmbricks.moefy.routers.MoefiedRouter` selecting experts from (N, H)
            inputs, or None (oracle / dense only).
        top_k: experts per token (the router's ``top_k``; the oracle selects as many).
        dynamic_threshold: if set (router mode), the fewest experts whose predicted mass share
            (the softmax of the router's scores) reaches it; ``top_k`` is then ignored. Stored in
            the router.
        shared_experts: S, the first S experts always on; the router has ``E - S`` experts and
            ``top_k`` counts routed experts only.
    """

    down_norms: Tensor

    def __init__(
        self,
        w_gate: Tensor,
        w_up: Tensor,
        w_down: Tensor,
        act: Any,
        router: MoefiedRouter | None,
        top_k: int,
        dynamic_threshold: float | None = None,
        shared_experts: int = 0,
    ) -> None:
        super().__init__()
        e, h, n = w_gate.shape
        if not 0 <= shared_experts < e:
            raise ConfigError(f"shared_experts must be in [0, {e - 1}] for {e} experts, got {shared_experts}")
        if w_up.shape != (e, h, n) or w_down.shape != (e, n, h):
            raise ConfigError(
                f"expert weights disagree: w_gate {tuple(w_gate.shape)}, w_up {tuple(w_up.shape)}, "
                f"w_down {tuple(w_down.shape)} (expected (E, H, n), (E, H, n), (E, n, H))"
            )
        self.w_gate = nn.Parameter(w_gate.contiguous())
        self.w_up = nn.Parameter(w_up.contiguous())
        self.w_down = nn.Parameter(w_down.contiguous())
        self.act = act
        self.num_experts = e
        self.shared_experts = shared_experts
        self.routed_experts = e - shared_experts
        self.expert_size = n
        self.hidden_size = h
        self._top_k = top_k  # the layer's settings, handed to its router (and the oracle's K)
        self._dynamic_threshold = dynamic_threshold
        self.router: MoefiedRouter | None = None
        self.mode: Mode = "dense"
        if router is not None:
            self.use_router(router)
        self.register_buffer("down_norms", w_down.detach().float().norm(dim=-1).reshape(-1), persistent=False)
        self.last_fraction: float = 1.0  # experts used / E in the last forward (traceability)
        self.skip_zeros: bool = zeroes_nonpositive(act)  # router mode: skip neurons whose gate is 0
        self._up_rows: tuple[tuple[int, int], Tensor] | None = None  # (I, H) cache for zero-skipping

    # ------------------------------------------------------------------ routing settings
    @property
    def top_k(self) -> int:
        """Experts per token: the router's ``top_k`` (the oracle selects as many)."""
        return self.router.top_k if self.router is not None else self._top_k

    @top_k.setter
    def top_k(self, k: int) -> None:
        self._top_k = k
        if self.router is not None:
            self.router.top_k = k

    @property
    def dynamic_threshold(self) -> float | None:
        """The router's dynamic-K mass share (None: top-K)."""
        return self.router.dynamic_threshold if self.router is not None else self._dynamic_threshold

    @dynamic_threshold.setter
    def dynamic_threshold(self, threshold: float | None) -> None:
        self._dynamic_threshold = threshold
        if self.router is not None:
            self.router.dynamic_threshold = threshold

    def use_router(self, router: MoefiedRouter) -> None:
        """Route with ``router`` from now on (mode ``router``), giving it this layer's K and threshold."""
        if router.num_experts != self.routed_experts:
            raise ConfigError(f"router has {router.num_experts} experts, the FFN {self.routed_experts} routed ones")
        router.top_k, router.dynamic_threshold = self.top_k, self.dynamic_threshold
        self.router = router
        self.mode = "router"

    # ------------------------------------------------------------------ weights in HF layout
    def dense_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_gate (I, H), W_up (I, H), W_down (H, I))`` in expert order."""
        h = self.hidden_size
        gate = self.w_gate.transpose(1, 2).reshape(-1, h)
        up = self.w_up.transpose(1, 2).reshape(-1, h)
        down = self.w_down.reshape(-1, h).T
        return gate, up, down

    @classmethod
    def from_dense(
        cls,
        gate: Tensor,
        up: Tensor,
        down: Tensor,
        num_experts: int,
        act: Any,
        router: MoefiedRouter | None = None,
        top_k: int = 1,
        dynamic_threshold: float | None = None,
        shared_experts: int = 0,
    ) -> MoefiedFFN:
        """Build from HF-layout weights already in expert order (gate, up (I, H); down (H, I)), shared experts first."""
        i, h = gate.shape
        if i % num_experts:
            raise ConfigError(f"experts={num_experts} does not divide the FFN width {i}")
        n = i // num_experts
        w_gate = gate.reshape(num_experts, n, h).transpose(1, 2)
        w_up = up.reshape(num_experts, n, h).transpose(1, 2)
        w_down = down.T.reshape(num_experts, n, h)
        return cls(w_gate, w_up, w_down, act, router, top_k, dynamic_threshold, shared_experts)

    # ------------------------------------------------------------------ selection
    def _route(self, x: Tensor) -> RouterOutput:
        if self.router is None:
            raise ConfigError("this MoEfied FFN has no router; use mode 'oracle' or 'dense'")
        return self.router(x)

    def full_mask(self, routed: Tensor) -> Tensor:
        """(N, E - S) selection of the routed experts -> (N, E) with the S shared experts on (S = 0: itself)."""
        if not self.shared_experts:
            return routed
        on = torch.ones(routed.shape[0], self.shared_experts, dtype=routed.dtype, device=routed.device)
        return torch.cat([on, routed], dim=1)

    def oracle_scores(self, a: Tensor) -> Tensor:
        """(N, I) activations in expert order -> (N, E) norms of the experts' outputs."""
        return expert_output_norms(a, self.w_down.detach())

    def _dense_a(self, x: Tensor) -> Tensor:
        h = self.hidden_size
        gate = x @ self.w_gate.transpose(0, 1).reshape(h, -1)  # (N, I): column e*n + j is w_gate[e, :, j]
        up = x @ self.w_up.transpose(0, 1).reshape(h, -1)  # (N, I)
        return self.act(gate) * up  # (N, I) expert order

    def _down(self, a: Tensor) -> Tensor:
        return a @ self.w_down.reshape(-1, self.hidden_size)  # (N, H)

    def sparse_forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Compute only the selected experts.

        Args:
            x: (N, H) inputs.
            mask: (N, E) bool selection.

        Returns:
            (N, H) the sum of the selected experts' outputs.
        """
        if x.shape[0] <= FEW_TOKENS:
            return self._few_tokens_forward(x, mask)
        pairs = mask.T.nonzero()  # (S, 2) rows (expert, token), grouped by expert
        experts, tokens = pairs[:, 0], pairs[:, 1]
        counts = torch.bincount(experts, minlength=self.num_experts).tolist()
        y = torch.zeros_like(x)
        start = 0
        for e, c in enumerate(counts):
            if not c:
                continue
            tok = tokens[start : start + c]  # (c,) distinct tokens of expert e
            start += c
            xe = x.index_select(0, tok)  # (c, H)
            g = self.act(torch.mm(xe, self.w_gate[e]))  # (c, n)
            if self.skip_zeros:
                ye, rows = expert_forward(xe, g, self.w_up[e], self.w_down[e])  # (c', H)
                y.index_add_(0, tok if rows is None else tok[rows], ye)
                continue
            y.index_add_(0, tok, torch.mm(g.mul_(torch.mm(xe, self.w_up[e])), self.w_down[e]))
        return y

    def up_rows(self) -> Tensor:
        """(I, H) the up projection with one contiguous row per neuron (cached until ``w_up`` changes)."""
        key = (self.w_up.data_ptr(), self.w_up._version)
        if self._up_rows is None or self._up_rows[0] != key:
            rows = self.w_up.detach().transpose(1, 2).reshape(-1, self.hidden_size).contiguous()
            self._up_rows = (key, rows)
        return self._up_rows[1]

    def _few_tokens_forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Decoding: the experts any token selected, as one batched product (zero for the others)."""
        used = mask.any(0).nonzero().squeeze(1)  # (U,)
        keep = mask[:, used].T.to(x.dtype)[..., None]  # (U, N, 1)
        gate = torch.matmul(x, self.w_gate.index_select(0, used))  # (U, N, n)
        if self.skip_zeros:
            n = self.expert_size
            g = self.act(gate).mul_(keep).transpose(0, 1).reshape(x.shape[0], -1)  # (N, U n)
            neurons = (used[:, None] * n + torch.arange(n, device=x.device)).reshape(-1)  # (U n,)
            return live_neuron_forward(x, g, neurons, self.up_rows(), self.w_down.reshape(-1, self.hidden_size))
        up = torch.matmul(x, self.w_up.index_select(0, used))  # (U, N, n)
        a = self.act(gate).mul_(up).mul_(keep)
        return torch.bmm(a, self.w_down.index_select(0, used)).sum(0)  # (N, H)

    def forward(self, x: Tensor) -> Tensor:
        """(..., H) -> (..., H)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.mode == "dense":
            self.last_fraction = 1.0
            return self._down(self._dense_a(flat)).view(shape)
        if self.mode == "oracle":
            a = self._dense_a(flat)
            mask = self.full_mask(topk_mask(self.oracle_scores(a)[:, self.shared_experts :], self.top_k))
            self.last_fraction = float(mask.float().mean())
            keep = mask.repeat_interleave(self.expert_size, dim=1).to(a.dtype)
            return self._down(a * keep).view(shape)
        if self.mode != "router":
            raise ConfigError(f"mode must be 'router', 'oracle' or 'dense', got {self.mode!r}")
        if self.training and torch.is_grad_enabled():
            return self._train_forward(flat).view(shape)
        mask = self.full_mask(routed_mask(self._route(flat), self.routed_experts))  # (N, E)
        self.last_fraction = float(mask.float().mean())
        return self.sparse_forward(flat, mask).view(shape)

    def _train_forward(self, x: Tensor) -> Tensor:
        """Differentiable equivalent of the sparse path: each neuron scaled by its expert's gate.

        The forward value is the sum of the selected experts (the router's weights are 1); the
        router receives the gradient of ``sigmoid(score)`` as if each expert's output were scaled by it.
        """
        out = self._route(x)
        gate = self.full_mask(routed_gates(out, self.routed_experts).to(x.dtype))  # (N, E): 1 where used, else 0
        self.last_fraction = float(self.full_mask(routed_mask(out, self.routed_experts)).float().mean())
        a = self._dense_a(x) * gate.repeat_interleave(self.expert_size, dim=1)
        return self._down(a)
