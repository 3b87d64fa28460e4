"""TEAL with its decoding kernel: every thresholded projection of lmbricks' LM through :mod:`sparse_gemv`.

``with TealDecode(model, thresholds):`` replaces, in every block, the four projections whose
inputs TEAL thresholds (:data:`lmbricks.sparsify.teal.SITES`: ``qkv`` reads the attention's
input, then ``o``, ``gate_up`` reads the FFN's input, then ``down``) by a :class:`TealLinear`:

- one token (batch 1, one position: a decoding step) runs the sparse kernel, which reads only the
  transposed weight rows of the input entries above the threshold;
- anything longer (a prompt, a scored continuation, a batch) runs the dense product of the
  thresholded input, exactly what :class:`lmbricks.sparsify.teal.Teal`'s masks compute (the same
  operations, bit for bit).

So a prompt's prefill and teacher-forced scoring are TEAL's masked model, and decoding is TEAL's
kernel; leaving the block restores the model's own projections. The transposed weights (one
copy of every thresholded matrix, in its dtype) are built once by :func:`transposed_weights` and
may be shared between sessions of different thresholds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.sparsify.cats import threshold_mask
from lmbricks.sparsify.sparse_gemv import sparse_linear, transposed_weight
from lmbricks.sparsify.teal import teal_sites


class TealLinear(nn.Module):
    """A linear layer whose input entries of magnitude <= ``threshold`` are zeroed (see the module docstring).

    Args:
        linear: the projection (its weight is not copied; the dense path calls it).
        threshold: t >= 0.
        wt: its :func:`transposed_weight` (in, out).

    Attributes:
        kept, seen: input entries used and offered by the kernel's calls so far (one-token calls only).
    """

    def __init__(self, linear: nn.Linear, threshold: float, wt: Tensor) -> None:
        super().__init__()
        self.linear, self.threshold, self.wt = linear, threshold, wt
        self.kept = self.seen = 0
        self.in_features, self.out_features = linear.in_features, linear.out_features  # what callers read

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out)."""
        training = torch.is_grad_enabled() and (x.requires_grad or self.linear.weight.requires_grad)
        if x.shape[:-1].numel() == 1 and not training:  # one token, no autograd: the kernel
            y, kept = sparse_linear(x, self.wt, self.threshold, self.linear.bias)
            self.kept, self.seen = self.kept + kept, self.seen + x.shape[-1]
            return y
        return self.linear(threshold_mask(x, self.threshold) if self.threshold > 0 else x)


def _projections(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) of every thresholded projection, in :func:`teal_sites`' order."""
    sites = teal_sites(model)  # validates the model: lmbricks' LM with dense gated FFNs
    out = []
    for b in range(len(sites) // 4):
        attn, ffn = sites[4 * b], sites[4 * b + 2]
        for parent, name in ((attn, "qkv"), (attn, "o"), (ffn, "gate_up"), (ffn, "down")):
            linear = getattr(parent, name)
            if type(linear) is not nn.Linear:
                raise ConfigError(f"TEAL's kernel: layer {b}'s {name} is a {type(linear).__name__}, not nn.Linear")
            out.append((parent, name, linear))
    return out


def transposed_weights(model: nn.Module) -> list[Tensor]:
    """The :func:`transposed_weight` of every thresholded projection of ``model``, in site order (4 per block)."""
    return [transposed_weight(linear.weight) for _, _, linear in _projections(model)]


class TealDecode:
    """``with TealDecode(model, thresholds):`` TEAL's thresholds with its decoding kernel (module docstring).

    Args:
        model: lmbricks' LM with dense gated FFNs (fp32 or bf16 weights).
        thresholds: one t >= 0 per site of :func:`teal_sites` (:func:`lmbricks.sparsify.teal.calibrate_teal`).
        transposed: :func:`transposed_weights` of ``model`` (built here when None).

    Raises:
        ConfigError: the thresholds or the transposed weights do not match the sites.
    """

    def __init__(self, model: nn.Module, thresholds: list[float], transposed: list[Tensor] | None = None) -> None:
        self.projections = _projections(model)
        n = len(self.projections)
        if len(thresholds) != n or any(t < 0 for t in thresholds):
            raise ConfigError(f"thresholds: {n} values >= 0 expected (one per site), got {len(thresholds)}")
        self.transposed = transposed_weights(model) if transposed is None else transposed
        if len(self.transposed) != n:
            raise ConfigError(f"transposed: {n} matrices expected (one per site), got {len(self.transposed)}")
        self.thresholds = thresholds
        self.layers: list[TealLinear] = []

    def __enter__(self) -> TealDecode:
        for (parent, name, linear), t, wt in zip(self.projections, self.thresholds, self.transposed, strict=True):
            layer = TealLinear(linear, t, wt)
            setattr(parent, name, layer)
            self.layers.append(layer)
        return self

    def kept_fraction(self) -> float:
        """The fraction of input entries the kernel used over all its calls so far (1 - decode sparsity)."""
        return sum(m.kept for m in self.layers) / max(1, sum(m.seen for m in self.layers))

    def __exit__(self, *_exc: Any) -> None:
        for parent, name, linear in self.projections:
            setattr(parent, name, linear)
        self.layers.clear()
