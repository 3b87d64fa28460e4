"""Inference copies of the experts' weights in oneDNN's packed layout, for bf16 on CPU.

oneDNN's bf16 matmul with a plain weight (either (K, N) row-major or the (N, K) nn.Linear layout)
reorders it into its blocked layout on every call; with few rows that reorder is most of the
cost. A weight reordered once (``torch.ops.mkldnn._reorder_linear_weight``, what torch's
inductor does for frozen CPU models) and multiplied with ``torch.ops.mkldnn._linear_pointwise``
gives the same values (bit-identical in the measurements) at a fraction of the CPU time:
bench/moe_layouts.py measures each projection of bench/moe.py's layer at 1, 2 and 8 rows in every
layout (docs/moe.md, "Experts and dispatch", has the table: packed took 69-80% of the best plain
layout's CPU time in bf16; in fp32 MKL's packed GEMM did not help, so fp32 is left as it was).

The copy is built on the first bf16 inference call and kept until the parameters change (their
in-place version counter, storage or dtype): it costs one more bf16 copy of the expert weights
(2 bytes per expert parameter; 44 MB for bench/moe.py's layer). It is never part of the
state dict, the parameters or autograd: training, ``to_hf`` and checkpoints see the parameters as
before. ``Experts.pack_inference = False`` turns it off (no extra memory, the plain path).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.runtime import native_bf16


def packing_available(x: Tensor) -> bool:
    """Whether ``x``'s products can use packed weights: bf16 on a CPU with native bf16 and oneDNN.

    The ops are torch's private ones: :func:`_packing_works` runs them once on a small product and
    compares with ``F.linear``, so a torch whose ops changed falls back to the plain path.
    """
    return (
        x.device.type == "cpu"
        and x.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and native_bf16("cpu")
        and _packing_works()
    )


@functools.cache
def _packing_works() -> bool:
    """One probe of the private packing ops: present, callable with this signature, and right."""
    if not hasattr(torch.ops.mkldnn, "_reorder_linear_weight") or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    w = torch.linspace(-1, 1, 24 * 16).reshape(24, 16).bfloat16()  # (N, K)
    x = torch.linspace(-2, 2, 3 * 16).reshape(3, 16).bfloat16()  # (M, K)
    try:
        got = packed_linear(x, pack_linear_weight(w))
    except (RuntimeError, TypeError):
        return False
    return bool(torch.allclose(got.float(), torch.nn.functional.linear(x, w).float(), rtol=1e-2, atol=1e-2))


def pack_linear_weight(w: Tensor) -> Tensor:
    """An (N, K) nn.Linear-layout bf16 weight reordered once into oneDNN's blocked layout (an opaque tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), 1)  # layout chosen for few rows


def packed_linear(x: Tensor, packed: Tensor) -> Tensor:
    """(M, K) @ W^T -> (M, N) with a weight from :func:`pack_linear_weight` (W (N, K))."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


@dataclass(frozen=True)
class PackedExperts:
    """Every expert's two projections, packed: ``w_in[e]`` is (N, H), ``w_out[e]`` is (H, I) before packing.

    Attributes:
        key: what the copy was built from (see :func:`_key`); a different key means stale.
        w_in: per expert, the packed input projection.
        w_out: per expert, the packed output projection.
    """

    key: tuple[Any, ...]
    w_in: list[Tensor]
    w_out: list[Tensor]

    def first(self, x: Tensor, e: int) -> Tensor:
        """(n, H) rows of expert ``e`` -> (n, N) input projection."""
        return packed_linear(x, self.w_in[e])

    def second(self, a: Tensor, e: int) -> Tensor:
        """(n, I) activations of expert ``e`` -> (n, H) output projection."""
        return packed_linear(a, self.w_out[e])


# Kept beside the module, not on it: deepcopy, pickling and state dicts never see the opaque tensors.
_CACHE: weakref.WeakKeyDictionary[nn.Module, PackedExperts] = weakref.WeakKeyDictionary()


def _key(w_in: Tensor, w_out: Tensor, dtype: torch.dtype) -> tuple[Any, ...]:
    """Changes whenever either weight is modified in place, replaced, moved or cast."""
    return (dtype, w_in.data_ptr(), w_in._version, w_out.data_ptr(), w_out._version, w_in.shape, w_out.shape)


def packed_experts(owner: nn.Module, w_in: Tensor, w_out: Tensor, dtype: torch.dtype) -> PackedExperts:
    """The packed copy of ``owner``'s weights in ``dtype``, rebuilt if they changed since the last call.

    Args:
        owner: the module holding the weights (the cache's key).
        w_in: (E, H, N) input projections (any dtype; cast to ``dtype`` while packing).
        w_out: (E, I, H) output projections.
        dtype: the compute dtype (bf16).

    Returns:
        The :class:`PackedExperts`.
    """
    key = _key(w_in, w_out, dtype)
    cached = _CACHE.get(owner)
    if cached is not None and cached.key == key:
        return cached
    with torch.no_grad():
        packed = PackedExperts(
            key,
            [pack_linear_weight(w.t().to(dtype)) for w in w_in],  # (N, H) each
            [pack_linear_weight(w.t().to(dtype)) for w in w_out],  # (H, I) each
        )
    _CACHE[owner] = packed
    return packed
