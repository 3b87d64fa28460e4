"""Experts: E feed-forward networks stored as contiguous (E, in, out) parameters."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.moe.activations import ACTIVATIONS
from lmbricks.moe.dispatch import DispatchImpl, DispatchPlan, choose_impl, plan_dispatch
from lmbricks.moe.expert_ffn import expert_ffn_grouped, expert_ffn_loop, expert_ffn_loop_combined
from lmbricks.moe.packed import PackedExperts, packed_experts, packing_available
from lmbricks.moe.rows import combine_rows, gather_rows


class Experts(nn.Module):
    """E experts, y_e(x) = act(x W_in[e]) W_out[e], computed by sorted dispatch.

    Parameters (x @ W layout, so one expert's slice is a plain row-major matrix):
      - swiglu: ``gate_up`` (E, H, 2I), columns [gate | up]; ``down`` (E, I, H).
      - gelu / relu: ``up`` (E, H, I); ``down`` (E, I, H).
    The Hugging Face fused layout (transformers >= 5: gate_up_proj (E, 2I, H), down_proj (E, H, I))
    is the transpose of the last two axes: see ``from_hf`` / ``to_hf``.

    Args:
        num_experts: E.
        hidden_size: H.
        intermediate_size: I.
        activation: a name in :data:`~lmbricks.moe.activations.ACTIVATIONS` ("swiglu", "gelu", "relu").
        impl: dispatch implementation, "auto" (by device, dtype and token count), "loop" or "grouped".

    Inference in bf16 on CPU multiplies by a copy of the weights packed once in oneDNN's layout
    (:mod:`lmbricks.moe.packed`: same values, less CPU time, one more bf16 copy of the expert
    weights in memory, rebuilt when they change); set ``pack_inference = False`` to go without it.
    """

    pack_inference: bool = True

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        activation: str = "swiglu",
        impl: DispatchImpl = "auto",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r} (choose from {', '.join(ACTIVATIONS)})")
        self.num_experts = num_experts
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.activation = ACTIVATIONS[activation]
        self.impl: DispatchImpl = impl
        w_in = nn.Parameter(torch.empty(num_experts, hidden_size, self.activation.width_in(intermediate_size)))
        if self.activation.gated:
            self.gate_up = w_in
        else:
            self.up = w_in
        self.down = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))
        self.reset_parameters()

    @property
    def gated(self) -> bool:
        return self.activation.gated

    @property
    def w_in(self) -> nn.Parameter:
        """The input projection: ``gate_up`` (E, H, 2I) or ``up`` (E, H, I)."""
        return self.gate_up if self.gated else self.up

    def reset_parameters(self) -> None:
        """nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for each projection."""
        with torch.no_grad():
            b_in = 1.0 / math.sqrt(self.hidden_size)
            self.w_in.uniform_(-b_in, b_in)
            b_out = 1.0 / math.sqrt(self.intermediate_size)
            self.down.uniform_(-b_out, b_out)

    def forward(
        self,
        x: Tensor,
        weights: Tensor,
        indices: Tensor,
        keep: Tensor | None = None,
        plan: DispatchPlan | None = None,
    ) -> Tensor:
        """Weighted sum of the routed experts' outputs.

        Args:
            x: (T, H) tokens.
            weights: (T, k) gates.
            indices: (T, k) experts.
            keep: (T, k) bool pairs to compute (others contribute zero), or None for all.
            plan: a precomputed ``plan_dispatch(indices, keep, E)`` (the layer reuses its counts).

        Returns:
            (T, H) in x's dtype.
        """
        if plan is None:
            plan = plan_dispatch(indices, keep, self.num_experts)
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # The kernels write with out= into preallocated buffers, which autocast does not reach:
            # cast inputs, gates and weights to autocast's dtype here (differentiably, so the fp32
            # master weights get their gradients) and run the kernels with autocast off.
            dtype = torch.get_autocast_dtype(device)
            with torch.autocast(device, enabled=False):
                xc, wc = x.to(dtype), weights.to(dtype)
                packed = self._packed(xc, wc, plan) if type(self)._combine is Experts._combine else None
                if packed is not None:  # inference: the packed copy, no per-call cast of the weights
                    y = expert_ffn_loop_combined(xc, wc, plan, self.w_in, self.down, self.activation, packed)
                else:
                    y = self._combine(xc, wc, plan, self.w_in.to(dtype), self.down.to(dtype))
            return y.to(x.dtype)
        return self._combine(x, weights, plan, self.w_in, self.down)

    def _packed(self, x: Tensor, weights: Tensor, plan: DispatchPlan) -> PackedExperts | None:
        """The packed weights where inference takes them (loop path, no gradient, bf16 on CPU), else None."""
        if choose_impl(self.impl, x, plan.num_routed) != "loop" or not self.pack_inference:
            return None
        if torch.is_grad_enabled() and (x.requires_grad or weights.requires_grad or self.w_in.requires_grad):
            return None
        return packed_experts(self, self.w_in, self.down, x.dtype) if packing_available(x) else None

    def _combine(self, x: Tensor, weights: Tensor, plan: DispatchPlan, w_in: Tensor, w_out: Tensor) -> Tensor:
        """(T, H) weighted sum over the plan's pairs, all operands in one dtype."""
        impl = choose_impl(self.impl, x, plan.num_routed)
        trains = torch.is_grad_enabled() and (x.requires_grad or weights.requires_grad or w_in.requires_grad)
        if impl == "loop" and not trains:
            packed = self._packed(x, weights, plan)  # bf16 on CPU: weights packed once
            return expert_ffn_loop_combined(x, weights, plan, w_in, w_out, self.activation, packed)
        xs = gather_rows(x, plan)  # (S, H) sorted by expert
        if impl == "grouped":
            ys = expert_ffn_grouped(xs, w_in, w_out, plan.tokens_per_expert, self.activation)
        else:
            ys = expert_ffn_loop(xs, w_in, w_out, plan.counts, self.activation)
        return combine_rows(ys, weights, plan, overwrite=True)

    def expert_linear_weights(self, e: int) -> dict[str, Tensor]:
        """Expert ``e`` in nn.Linear layout (out, in): gate_proj/up_proj (I, H), down_proj (H, I)."""
        i = self.intermediate_size
        out = {"down_proj": self.down[e].t()}
        if self.gated:
            out["gate_proj"] = self.gate_up[e][:, :i].t()
            out["up_proj"] = self.gate_up[e][:, i:].t()
        else:
            out["up_proj"] = self.up[e].t()
        return out

    @torch.no_grad()
    def load_linear_weights(self, e: int, gate: Tensor | None, up: Tensor, down: Tensor) -> None:
        """Copy one expert given in nn.Linear layout: gate, up (I, H), down (H, I)."""
        i = self.intermediate_size
        if self.gated:
            if gate is None:
                raise ConfigError("a swiglu expert needs a gate projection")
            self.gate_up[e][:, :i].copy_(gate.t())
            self.gate_up[e][:, i:].copy_(up.t())
        else:
            self.up[e].copy_(up.t())
        self.down[e].copy_(down.t())

    @classmethod
    def from_dense(cls, mlp_or_weights: Any, num_experts: int, impl: DispatchImpl = "auto") -> Experts:
        """E copies of one dense FFN (sparse upcycling).

        Args:
            mlp_or_weights: a module with ``gate_proj``/``up_proj``/``down_proj`` (HF Llama/Qwen MLP),
                one with ``gate_up`` (fused, rows gate then up) and ``down`` (lmbricks.nn SwiGLU),
                one with ``w1``/``w3``/``w2`` (Mixtral expert), or a tuple (gate, up, down) of
                tensors in nn.Linear layout (gate may be None for gelu/relu).
            num_experts: E.
            impl: dispatch implementation.

        Returns:
            Experts whose every expert equals the dense FFN (SwiGLU unless gate is None).
        """
        gate, up, down = _dense_weights(mlp_or_weights)
        inter, hidden = up.shape
        experts = cls(num_experts, hidden, inter, "swiglu" if gate is not None else "relu", impl)
        experts = experts.to(dtype=up.dtype, device=up.device)
        for e in range(num_experts):
            experts.load_linear_weights(e, gate, up, down)
        return experts

    @classmethod
    def from_hf(cls, gate_up_proj: Tensor, down_proj: Tensor, impl: DispatchImpl = "auto") -> Experts:
        """From the transformers >= 5 fused layout: gate_up_proj (E, 2I, H), down_proj (E, H, I)."""
        e, two_i, h = gate_up_proj.shape
        experts = cls(e, h, two_i // 2, "swiglu", impl).to(dtype=gate_up_proj.dtype, device=gate_up_proj.device)
        with torch.no_grad():
            experts.gate_up.copy_(gate_up_proj.transpose(1, 2))
            experts.down.copy_(down_proj.transpose(1, 2))
        return experts

    def to_hf(self) -> dict[str, Tensor]:
        """The transformers >= 5 fused layout: gate_up_proj (E, 2I, H), down_proj (E, H, I) (copies)."""
        if not self.gated:
            raise ConfigError("only swiglu experts have a Hugging Face (Mixtral / Qwen2-MoE) layout")
        return {
            "gate_up_proj": self.gate_up.detach().transpose(1, 2).contiguous(),
            "down_proj": self.down.detach().transpose(1, 2).contiguous(),
        }


def _dense_weights(src: Any) -> tuple[Tensor | None, Tensor, Tensor]:
    """(gate, up, down) in nn.Linear layout from a dense FFN module or a tuple of tensors."""
    if isinstance(src, (tuple, list)):
        if len(src) != 3:
            raise ConfigError(f"dense weights must be (gate, up, down), got {len(src)} tensors")
        gate, up, down = src
        return (None if gate is None else gate.detach()), up.detach(), down.detach()
    if all(hasattr(src, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return src.gate_proj.weight.detach(), src.up_proj.weight.detach(), src.down_proj.weight.detach()
    if all(hasattr(src, n) for n in ("w1", "w3", "w2")):
        return src.w1.weight.detach(), src.w3.weight.detach(), src.w2.weight.detach()
    if hasattr(src, "gate_up") and hasattr(src, "down"):
        gate, up = src.gate_up.weight.detach().chunk(2)
        return gate, up, src.down.weight.detach()
    raise ConfigError(
        f"cannot read a dense FFN from {type(src).__name__}: expected gate_proj/up_proj/down_proj, "
        "w1/w3/w2, gate_up/down, or a (gate, up, down) tuple"
    )
