"""The dense feed-forward block: a gated FFN ``down(act(gate(x)) * up(x))`` with a choice of act.

``LMConfig.activation`` names act: SwiGLU's silu (the default, every Llama-family checkpoint),
ReGLU's relu, the squared-ReLU GLU (relu(g)**2, "ReLU^2 Wins") and FATReLU (ProSparse's shifted
ReLU: g where g > T). The ReLU family makes the gate exactly zero on many units, which is what
ReLU-fication (``lmbricks.sparsify``) trains for; :func:`track_activation_l1` exposes the
activation's mean magnitude to a training penalty without a second forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbricks.moe.activations import fatrelu
from lmbricks.nn.split_linear import split_linear


def gate_activation(g: Tensor, activation: str, threshold: float = 0.0) -> Tensor:
    """act(g) of a gated FFN ``down(act(gate) * up)``, for a name of ``DENSE_ACTIVATIONS``.

    Args:
        g: the gate projection, any shape.
        activation: "swiglu" (silu), "reglu" (relu), "relu2" (relu squared), "fatrelu" (g where g > T).
        threshold: FATReLU's T >= 0 (ignored by the others).

    Returns:
        A tensor of g's shape and dtype.
    """
    if activation == "swiglu":
        return F.silu(g)
    if activation == "reglu":
        return F.relu(g)
    if activation == "relu2":
        return torch.square(F.relu(g))
    return fatrelu(g, threshold)


class GatedFFN(nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up fused into one matrix (rows: gate then up).

    ``act`` is ``LMConfig.activation`` (SwiGLU by default). For a sparsity penalty, set
    ``track_l1 = True``: each forward then adds mean |act(gate)| (over tokens and units) to
    ``activation_l1``, which the caller reads and resets (:func:`take_activation_l1`); off, it costs nothing.
    """

    def __init__(self, hidden: int, intermediate: int, activation: str = "swiglu", threshold: float = 0.0) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)
        self.activation = activation
        self.threshold = threshold
        self.track_l1 = False
        self.activation_l1: Tensor | None = None  # sum over forwards of mean |act(gate)| while track_l1

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        """(..., H) -> ((..., H), None): a dense FFN has no auxiliary output."""
        half = self.gate_up.out_features // 2
        gate, up = split_linear(self.gate_up, x, (half, half))
        a = gate_activation(gate, self.activation, self.threshold)  # (..., I)
        if self.track_l1:
            l1 = a.abs().float().mean()
            self.activation_l1 = l1 if self.activation_l1 is None else self.activation_l1 + l1
        return self.down(a * up), None

    def reset_parameters(self, std: float, out_std: float) -> None:
        """Normal(0, std) gate_up; Normal(0, out_std) down (it writes into the residual)."""
        nn.init.normal_(self.gate_up.weight, std=std)
        nn.init.normal_(self.down.weight, std=out_std)


SwiGLU = GatedFFN  # the old name (a GatedFFN with the default activation is the SwiGLU it was)


def track_activation_l1(model: nn.Module, on: bool) -> int:
    """Switch the activation-L1 accumulator of every dense FFN in ``model`` on or off (and clear it).

    Returns:
        How many dense FFNs were switched (0: the model has none, a penalty would do nothing).
    """
    ffns = [m for m in model.modules() if isinstance(m, GatedFFN)]
    for m in ffns:
        m.track_l1 = on
        m.activation_l1 = None
    return len(ffns)


def take_activation_l1(model: nn.Module) -> Tensor | None:
    """Mean over dense FFNs of what they accumulated since the last call (scalar), then reset; None if none."""
    parts = []
    for m in model.modules():
        if isinstance(m, GatedFFN) and m.activation_l1 is not None:
            parts.append(m.activation_l1)
            m.activation_l1 = None
    return torch.stack(parts).mean() if parts else None
