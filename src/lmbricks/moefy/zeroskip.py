"""Zero-skipping for ReLU-family gates: a neuron whose gate activation is exactly zero does no work.

In a gated FFN ``a = act(x W_gate^T) * (x W_up^T)``; where ``act(g) == 0`` exactly (ReLU, ReLU^2,
FATReLU below its threshold) the neuron's up product and its down column contribute nothing, so
they can be skipped without changing a bit of the result (the skipped terms are exact zeros; a
non-finite up value, 0 * inf, is the one case the dense product would turn into NaN).

Two granularities, both exact:
* decoding (a few tokens): the gate of the selected experts is computed, then only the neurons
  live for some token are gathered: their up rows, a product over the live set, and their down
  rows (:func:`live_neuron_forward`); the work of the up and down projections scales with the
  live fraction;
* prefill (an expert's gathered tokens): tokens whose whole expert gate is zero and neurons
  zero for every one of the expert's tokens are dropped before the up and down products
  (:func:`expert_forward`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

_PROBE = (-4.0, -1.0, -1e-3, 0.0)


def zeroes_nonpositive(act: Any) -> bool:
    """Whether ``act`` maps non-positive inputs to exact zeros (ReLU family: relu, relu2, FATReLU).

    Args:
        act: the gate activation (a callable on tensors).

    Returns:
        True for activations whose zeros zero-skipping can exploit (False for SiLU, GELU).
    """
    with torch.no_grad():
        out = act(torch.tensor(_PROBE))
    return bool(torch.equal(out, torch.zeros_like(out)))


def expert_forward(xe: Tensor, gate: Tensor, w_up: Tensor, w_down: Tensor) -> tuple[Tensor, Tensor | None]:
    """One expert's rows with its dead tokens and dead neurons dropped.

    Args:
        xe: (c, H) the expert's tokens.
        gate: (c, n) their activated gate ``act(xe W_gate)``.
        w_up: (H, n) the expert's up block.
        w_down: (n, H) its down block.

    Returns:
        ``(y, rows)``: y (c', H) the expert's output for its live tokens, rows (c,) bool which of
        the c tokens they are (None: all of them).
    """
    nz = gate.ne(0)  # (c, n)
    rows: Tensor | None = nz.any(1)  # (c,) tokens with a live neuron
    assert rows is not None
    if bool(rows.all()):
        rows = None
    else:
        xe, gate, nz = xe[rows], gate[rows], nz[rows]
    cols = nz.any(0)  # (n,) neurons live for some token
    if bool(cols.all()):
        return torch.mm(gate.mul_(torch.mm(xe, w_up)), w_down), rows
    idx = cols.nonzero().squeeze(1)  # (n',)
    a = gate.index_select(1, idx).mul_(torch.mm(xe, w_up.index_select(1, idx)))  # (c', n')
    return torch.mm(a, w_down.index_select(0, idx)), rows


def live_neuron_forward(x: Tensor, gate: Tensor, neurons: Tensor, up_rows: Tensor, down_rows: Tensor) -> Tensor:
    """Decoding over the live neurons only.

    Args:
        x: (N, H) the few tokens.
        gate: (N, M) the activated gate of M candidate neurons (zero where a token did not select
            the neuron's expert).
        neurons: (M,) the candidates' indices in expert order (rows of ``up_rows``/``down_rows``).
        up_rows: (I, H) the up projection, one contiguous row per neuron.
        down_rows: (I, H) the down projection, one contiguous row per neuron.

    Returns:
        (N, H) the FFN output.
    """
    live = gate.ne(0).any(0).nonzero().squeeze(1)  # (A,) positions among the candidates
    if not live.numel():
        return torch.zeros_like(x)
    idx = neurons.index_select(0, live)  # (A,) neuron indices
    a = gate.index_select(1, live).mul_(torch.mm(x, up_rows.index_select(0, idx).T))  # (N, A)
    return torch.mm(a, down_rows.index_select(0, idx))  # (N, H)
