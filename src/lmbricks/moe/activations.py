"""Expert activations as objects: what one expert does between its input and output projections.

An expert computes ``y = act(x W_in) W_out``. The input projection h = x W_in is (S, N): for the
gated SwiGLU N = 2I (columns [gate | up]) and ``act(h) = silu(gate) * up``; the gated ReGLU (a
ReLU-fied SwiGLU) is ``fatrelu(gate, T) * up``, T = 0 being ReLU; for GELU and ReLU N = I.
Each activation offers the forms the dispatch paths need: differentiable (the grouped path), in
place for inference, into preallocated slices (the loop path, one expert's rows while they are in
cache) and the hand-written backward of the loop path. :data:`ACTIVATIONS` is the registry that
``MoEConfig.activation`` names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import override


def silu_copy(g: Tensor) -> Tensor:
    """silu of a column slice of h into a fresh contiguous buffer.

    In isolation ``F.silu`` of the strided (S, I) half of h measured ~2.5x slower on CPU than
    writing it with ``out=`` into a contiguous buffer (18 ms vs 7 ms for 4096 x 1792 fp32; no
    difference was measurable in the whole layer). Under autograd (the grouped path): ``F.silu``.
    """
    if torch.is_grad_enabled() and g.requires_grad:
        return F.silu(g)
    return torch.ops.aten.silu.out(g, out=torch.empty(g.shape, dtype=g.dtype, device=g.device))


class Activation:
    """An expert's hidden activation h (S, N) -> a (S, I). Subclasses implement every form."""

    name = "activation"
    gated = False  # whether h holds a gate half besides the up half (N = 2I)

    def width_in(self, intermediate: int) -> int:
        """N, the input projection's width for experts of width I."""
        return 2 * intermediate if self.gated else intermediate

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        """(a, s): a = act(h) (differentiable), s = what the gated backward reads (None otherwise)."""
        raise NotImplementedError

    def inplace(self, h: Tensor) -> Tensor:
        """act(h) for inference, reusing h's memory where it can."""
        raise NotImplementedError

    def into(self, h: Tensor, a: Tensor, s: Tensor | None) -> None:
        """Write act(h) into ``a`` (and the backward's saved part into ``s``): one expert's slice."""
        raise NotImplementedError

    def backward(self, da: Tensor, h: Tensor, a: Tensor, s: Tensor | None) -> Tensor:
        """dL/dh (S, N) from dL/da (S, I), given what :meth:`into` wrote."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SwiGLU(Activation):
    """silu(gate) * up over h = [gate | up]; s = silu(gate) is kept for the backward."""

    name = "swiglu"
    gated = True

    @override
    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        i = h.shape[1] // 2
        s = silu_copy(h[:, :i])
        return s * h[:, i:], s

    @override
    def inplace(self, h: Tensor) -> Tensor:
        i = h.shape[1] // 2
        return silu_copy(h[:, :i]).mul_(h[:, i:])

    @override
    def into(self, h: Tensor, a: Tensor, s: Tensor | None) -> None:
        assert s is not None
        i = a.shape[1]
        torch.ops.aten.silu.out(h[:, :i], out=s)
        torch.mul(s, h[:, i:], out=a)

    @override
    def backward(self, da: Tensor, h: Tensor, a: Tensor, s: Tensor | None) -> Tensor:
        assert s is not None
        i = da.shape[1]
        g, u = h[:, :i], h[:, i:]
        dh = torch.empty_like(h)
        dg = dh[:, :i]
        torch.mul(da, u, out=dg)  # dL/ds, then silu' in place: no (S, I) temporary
        torch.ops.aten.silu_backward.grad_input(dg, g, grad_input=dg)
        torch.mul(da, s, out=dh[:, i:])
        return dh


class GELU(Activation):
    """gelu(h) (exact erf form)."""

    name = "gelu"

    @override
    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        return F.gelu(h), None

    @override
    def inplace(self, h: Tensor) -> Tensor:
        return F.gelu(h)

    @override
    def into(self, h: Tensor, a: Tensor, s: Tensor | None) -> None:
        torch.ops.aten.gelu.out(h, out=a)

    @override
    def backward(self, da: Tensor, h: Tensor, a: Tensor, s: Tensor | None) -> Tensor:
        return torch.ops.aten.gelu_backward(da, h)


class ReLU(Activation):
    """relu(h); the backward reads the output's sign."""

    name = "relu"

    @override
    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        return F.relu(h), None

    @override
    def inplace(self, h: Tensor) -> Tensor:
        return h.relu_()

    @override
    def into(self, h: Tensor, a: Tensor, s: Tensor | None) -> None:
        torch.clamp(h, min=0, out=a)

    @override
    def backward(self, da: Tensor, h: Tensor, a: Tensor, s: Tensor | None) -> Tensor:
        return torch.ops.aten.threshold_backward(da, a, 0)


def fatrelu(g: Tensor, threshold: float) -> Tensor:
    """FATReLU (ProSparse, arXiv 2402.13516): ``g if g > threshold else 0``; threshold 0 is ReLU.

    Args:
        g: any shape.
        threshold: T >= 0.

    Returns:
        A tensor of g's shape and dtype.
    """
    return torch.where(g > threshold, g, torch.zeros((), dtype=g.dtype, device=g.device))


class ReGLU(Activation):
    """fatrelu(gate, T) * up over h = [gate | up] (the gated ReLU of a ReLU-fied SwiGLU FFN).

    s = fatrelu(gate, T) is kept for the backward; T = 0 is ``relu(gate) * up``.
    """

    name = "reglu"
    gated = True

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    @override
    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        i = h.shape[1] // 2
        s = fatrelu(h[:, :i], self.threshold)
        return s * h[:, i:], s

    @override
    def inplace(self, h: Tensor) -> Tensor:
        i = h.shape[1] // 2
        return fatrelu(h[:, :i], self.threshold).mul_(h[:, i:])

    @override
    def into(self, h: Tensor, a: Tensor, s: Tensor | None) -> None:
        assert s is not None
        i = a.shape[1]
        s.copy_(fatrelu(h[:, :i], self.threshold))
        torch.mul(s, h[:, i:], out=a)

    @override
    def backward(self, da: Tensor, h: Tensor, a: Tensor, s: Tensor | None) -> Tensor:
        assert s is not None
        i = da.shape[1]
        g, u = h[:, :i], h[:, i:]
        dh = torch.empty_like(h)
        torch.mul(da * u, g > self.threshold, out=dh[:, :i])
        torch.mul(da, s, out=dh[:, i:])
        return dh

    @override
    def __repr__(self) -> str:
        return f"ReGLU(threshold={self.threshold})"


#: The activations ``MoEConfig.activation`` and ``Experts`` accept, by name.
ACTIVATIONS: dict[str, Activation] = {act.name: act for act in (SwiGLU(), GELU(), ReLU(), ReGLU())}
