"""Shared expert (Qwen2-MoE / DeepSeekMoE): a dense SwiGLU every token passes through."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SharedExpert(nn.Module):
    """y = sigmoid(x w_gate) * down(silu(gate_proj(x)) * up_proj(x)) (Qwen2-MoE).

    Names follow Qwen2-MoE: ``gate_proj``, ``up_proj``, ``down_proj`` (the shared_expert MLP) and
    ``gate`` (its shared_expert_gate, a Linear(H, 1)). With ``gated=False`` the sigmoid scale is
    omitted (DeepSeekMoE's shared experts).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, gated: bool = True) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.gate = nn.Linear(hidden_size, 1, bias=False) if gated else None

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (T, H). Returns: (T, H)."""
        y = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        if self.gate is not None:
            y = F.sigmoid(self.gate(x)) * y
        return y
