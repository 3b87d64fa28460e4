"""CATS (arXiv 2404.08763): threshold the gate activation of a SwiGLU FFN, and skip what it zeroes.

CATS (Contextually-Aware Thresholding for Sparsity) sets ``act(gate x)`` to zero where its magnitude
is at most a per-layer threshold ``t``, chosen on calibration text as the ``sparsity`` quantile of
``|act(gate x)|`` (so that fraction of the activations is zeroed there), and computes
``down((mask * act(gate x)) * up x)``. This is CATS and not TEAL (arXiv 2408.14690): TEAL
thresholds the *inputs* of every linear layer (the hidden states), CATS only the gate activation
of the FFN, which is the part a decoding kernel can exploit without touching attention.

The kernel (:func:`cats_decode`): for a few tokens, the gate product runs dense, then only the live
neurons' up rows are gathered and multiplied, and the down projection is one ``embedding_bag`` over
the live rows of ``W_down^T`` weighted by their activations (a fused gather-and-sum, no gathered
copy). :class:`CatsFFN` uses it for up to ``decode_max`` tokens and the masked dense computation
for longer inputs; with ``t = 0`` the masked dense computation is the dense FFN bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.nn.ffn import GatedFFN, gate_activation
from lmbricks.nn.model import LM
from lmbricks.nn.split_linear import split_linear
from lmbricks.sparsify.griffin import FFNSite, ffn_sites

#: At most this many tokens take the sparse decoding kernel; longer inputs run masked dense.
DECODE_MAX = 4


def threshold_mask(a: Tensor, threshold: float) -> Tensor:
    """CATS' activation: ``a`` where ``|a| > threshold``, else 0 (same shape and dtype)."""
    return torch.where(a.abs() > threshold, a, torch.zeros((), dtype=a.dtype))


def quantile_threshold(magnitudes: Tensor, sparsity: float) -> float:
    """The threshold that zeroes a ``sparsity`` fraction of ``magnitudes`` (N,): their k-th smallest value.

    Raises:
        ConfigError: ``sparsity`` outside [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity: the fraction of gate activations zeroed must be in [0, 1), got {sparsity}")
    k = int(round(sparsity * magnitudes.numel()))
    return 0.0 if k == 0 else float(magnitudes.float().kthvalue(k).values)


class CatsFFN(nn.Module):
    """A dense :class:`GatedFFN` with CATS' thresholded gate activation (same weights, shared).

    Attributes:
        ffn: the wrapped dense FFN (its weights are read, never copied except ``down_t``).
        threshold: t >= 0; 0 computes the dense FFN.
        down_t: (I, H) contiguous ``W_down^T``, the rows the decoding kernel sums.
        decode_max: inputs of at most this many tokens take the kernel.
        counts: [zeroed, total] gate activations of the masked dense path since construction
            (counted only while ``count`` is true).
    """

    def __init__(self, ffn: GatedFFN, threshold: float, decode_max: int = DECODE_MAX) -> None:
        super().__init__()
        self.ffn, self.threshold, self.decode_max = ffn, threshold, decode_max
        self.down_t = ffn.down.weight.detach().t().contiguous()  # (I, H)
        self.count, self.counts = False, [0, 0]

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        """(..., H) -> ((..., H), None), like the dense FFN."""
        tokens = x.numel() // x.shape[-1]
        if tokens <= self.decode_max and self.threshold > 0 and not self.count:
            return cats_decode(self.ffn, self.down_t, x, self.threshold), None
        return cats_dense(self.ffn, x, self.threshold, self.counts if self.count else None), None


def cats_dense(ffn: GatedFFN, x: Tensor, threshold: float, counts: list[int] | None = None) -> Tensor:
    """The masked dense FFN ``down(threshold_mask(act(gate x)) * up x)``: (..., H) -> (..., H).

    ``counts``, if given, gets the zeroed and the total gate activations added.
    """
    half = ffn.gate_up.out_features // 2
    gate, up = split_linear(ffn.gate_up, x, (half, half))
    a = threshold_mask(gate_activation(gate, ffn.activation, ffn.threshold), threshold)  # (..., I)
    if counts is not None:
        counts[0] += int((a == 0).sum())
        counts[1] += a.numel()
    return ffn.down(a * up)


def cats_decode(ffn: GatedFFN, down_t: Tensor, x: Tensor, threshold: float) -> Tensor:
    """The CATS kernel for a few tokens: dense gate, gathered up rows of the live neurons, fused down.

    Args:
        ffn: the dense FFN (its fused gate/up weight (2I, H)).
        down_t: (I, H) ``W_down^T``, contiguous.
        x: (..., H) inputs, few tokens.
        threshold: t > 0.

    Returns:
        (..., H), equal to :func:`cats_dense` up to summation order.
    """
    half = ffn.gate_up.out_features // 2
    w = ffn.gate_up.weight
    flat = x.reshape(-1, x.shape[-1])  # (N, H)
    a = threshold_mask(gate_activation(flat @ w[:half].t(), ffn.activation, ffn.threshold), threshold)  # (N, I)
    live = a.abs().sum(0).nonzero().squeeze(1)  # (L,) neurons live on any of the tokens
    up = flat @ F.embedding(half + live, w).t()  # (N, L): the up rows of the live neurons only
    coef = a[:, live] * up  # (N, L)
    bags = live.expand(flat.shape[0], -1)  # (N, L)
    y = F.embedding_bag(bags, down_t, mode="sum", per_sample_weights=coef.reshape(bags.shape))  # (N, H)
    return y.reshape(x.shape)


class Cats:
    """CATS on lmbricks' LM: ``with Cats(model, thresholds):`` every dense FFN runs thresholded.

    Args:
        model: lmbricks' LM (dense :class:`GatedFFN` layers).
        thresholds: one t >= 0 per FFN, in layer order (:func:`calibrate`).
        count: count the zeroed activations (every input then runs the masked dense path).

    Raises:
        ConfigError: the model has other FFNs than GatedFFN, or the thresholds do not match them.
    """

    def __init__(self, model: nn.Module, thresholds: list[float], count: bool = False) -> None:
        self.sites = _gated_sites(model)
        if len(thresholds) != len(self.sites) or any(t < 0 for t in thresholds):
            raise ConfigError(f"thresholds: {len(self.sites)} values >= 0 expected (one per FFN), got {thresholds}")
        self.thresholds, self.count = thresholds, count
        self.ffns: list[CatsFFN] = []

    def __enter__(self) -> Cats:
        for site, t in zip(self.sites, self.thresholds, strict=True):
            assert isinstance(site.module, GatedFFN)
            ffn = CatsFFN(site.module, t)
            ffn.count = self.count
            self.ffns.append(ffn)
            setattr(site.parent, site.attr, ffn)
        return self

    def zero_fractions(self) -> list[float]:
        """Per FFN, the fraction of gate activations zeroed so far (``count=True``; masked dense path)."""
        return [f.counts[0] / max(1, f.counts[1]) for f in self.ffns]

    def __exit__(self, *_exc: object) -> None:
        for site in self.sites:
            setattr(site.parent, site.attr, site.module)


def _gated_sites(model: nn.Module) -> list[FFNSite]:
    sites = ffn_sites(model)
    if not all(isinstance(s.module, GatedFFN) for s in sites):
        raise ConfigError("CATS runs on lmbricks' LM (dense GatedFFN layers); load the model with lmbricks.load_model")
    return sites


@torch.no_grad()
def calibrate(model: nn.Module, blocks: Tensor, sparsity: float, per_layer: int = 1_000_000) -> list[float]:
    """Per-FFN thresholds that zero ``sparsity`` of the gate activations on calibration ``blocks`` (B, T).

    Args:
        model: lmbricks' LM (dense).
        blocks: calibration token ids.
        sparsity: the target fraction of zeroed gate activations, in [0, 1).
        per_layer: at most this many activations per layer are kept for the quantile (a regular subsample).

    Returns:
        One threshold per FFN, in layer order.
    """
    quantile_threshold(torch.ones(1), sparsity)  # validates before the forward

    def magnitudes(mod: nn.Module, x: Tensor) -> Tensor:
        assert isinstance(mod, GatedFFN)
        half = mod.gate_up.out_features // 2
        return gate_activation(x @ mod.gate_up.weight[:half].t(), mod.activation, mod.threshold).abs()  # (..., I)

    sites = [s.module for s in _gated_sites(model)]
    return site_quantiles(model, blocks, sites, magnitudes, sparsity, per_layer)


@torch.no_grad()
def site_quantiles(
    model: nn.Module,
    blocks: Tensor,
    sites: list[nn.Module],
    magnitudes: Callable[[nn.Module, Tensor], Tensor],
    sparsity: float,
    per_site: int = 1_000_000,
) -> list[float]:
    """Per site, the threshold zeroing ``sparsity`` of ``magnitudes(site, its input)`` over calibration ``blocks``.

    Args:
        model: lmbricks' LM (or any causal LM taking (1, T) ids), run one sequence at a time.
        blocks: (B, T) calibration token ids.
        sites: modules whose first input is read (a forward pre-hook on each).
        magnitudes: (module, input) -> the magnitudes a threshold will be compared with (any shape).
        sparsity: the target fraction, in [0, 1).
        per_site: at most this many magnitudes per site are kept for the quantile (a random subsample:
            a strided one would align with the width).

    Returns:
        One threshold per site, in order.
    """
    return [quantile_threshold(s, sparsity) for s in site_samples(model, blocks, sites, magnitudes, per_site)]


def site_samples(
    model: nn.Module,
    blocks: Tensor,
    sites: list[nn.Module],
    magnitudes: Callable[[nn.Module, Tensor], Tensor],
    per_site: int = 1_000_000,
) -> list[Tensor]:
    """Per site, up to ``per_site`` per sequence of ``magnitudes(site, its input)`` over ``blocks`` (1-D fp32 each).

    The arguments are :func:`site_quantiles`' (which takes a quantile of each).
    """
    samples: list[list[Tensor]] = [[] for _ in sites]
    gen = torch.Generator().manual_seed(0)

    def keeper(i: int) -> Any:
        def hook(mod: nn.Module, args: tuple[Tensor, ...]) -> None:
            flat = magnitudes(mod, args[0].detach()).float().flatten()
            if flat.numel() > per_site:
                flat = flat[torch.randint(flat.numel(), (per_site,), generator=gen)]
            samples[i].append(flat)

        return hook

    handles = [m.register_forward_pre_hook(keeper(i)) for i, m in enumerate(sites)]
    try:
        for row in blocks:  # one sequence at a time: no (B, T, V) logits
            model.hidden_states(row[None]) if isinstance(model, LM) else model(row[None])
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(s) for s in samples]
