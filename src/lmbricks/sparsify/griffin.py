"""GRIFFIN (arXiv 2404.01365): per-sequence FFN neuron selection from the prompt, kept while generating.

The prompt runs dense. For each FFN, let ``Z`` (T, I) be its intermediate activation over the
prompt's T tokens (the input of the down projection: ``act(gate x) * up x``); each token's row is
scaled to unit L2 norm and neuron i scores ``s_i = ||Z_bar[:, i]||_2`` (the column norm of the
normalised matrix), so every prompt token has the same say and a neuron that is large on many
tokens wins. The top ``round(keep * I)`` neurons of each FFN are kept, and generation runs with the
FFN restricted to their gate and up rows and down columns (a smaller dense FFN, no gather per
token). The selection is per sequence and per layer, chosen once.

:class:`Griffin` wraps lmbricks' LM (dense :class:`lmbricks.nn.ffn.GatedFFN` layers) and the Hugging
Face Llama-family MLPs (``gate_proj``/``up_proj``/``down_proj``): inside ``with Griffin(model, keep)``
the forwards collect the statistic, :meth:`Griffin.prune` swaps every FFN for its restriction, and
leaving the block restores the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from lmbricks.analysis.ffn import FFNBlock, find_ffns
from lmbricks.analysis.masking import keep_count
from lmbricks.errors import ConfigError
from lmbricks.nn.ffn import GatedFFN


def normalised_square_sums(z: Tensor) -> Tensor:
    """Per neuron, the sum over tokens of its squared share of each token's norm: (..., I) -> (I,) fp32.

    A token whose activation is all zero contributes nothing.
    """
    flat = z.detach().float().reshape(-1, z.shape[-1])  # (T, I)
    norms = flat.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)  # (T, 1)
    return (flat / norms).square().sum(dim=0)


def griffin_scores(z: Tensor) -> Tensor:
    """GRIFFIN's statistic: column L2 norms of the row-normalised prompt activations.

    Args:
        z: (T, I) (or (B, T, I), read as B*T tokens) FFN intermediate activations of one prompt.

    Returns:
        (I,) fp32 scores ``||Z_bar[:, i]||_2`` with ``Z_bar[t] = Z[t] / ||Z[t]||_2``.
    """
    return normalised_square_sums(z).sqrt()


def griffin_select(scores: Tensor, keep: float) -> Tensor:
    """The kept neurons: the top ``round(keep * I)`` scores, in increasing index order.

    Args:
        scores: (I,) neuron scores (:func:`griffin_scores`).
        keep: fraction of neurons kept, in (0, 1].

    Returns:
        (k,) int64 indices, sorted, at least one.

    Raises:
        ConfigError: ``keep`` outside (0, 1].
    """
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"keep: the fraction of FFN neurons kept must be in (0, 1], got {keep}")
    k = max(1, keep_count(scores.numel(), 1.0 - keep))
    return torch.topk(scores.float(), k, sorted=False).indices.sort().values


class RestrictedMLP(nn.Module):
    """A Hugging Face gated MLP restricted to some neurons: ``down(act(gate x) * up x)`` as in LlamaMLP."""

    def __init__(self, block: FFNBlock, keep: Tensor) -> None:
        super().__init__()
        assert block.gate is not None
        self.gate_proj = _rows(block.gate, keep)
        self.up_proj = _rows(block.up, keep)
        self.down_proj = _columns(block.down, keep)
        self.act_fn = block.act

    def forward(self, x: Tensor) -> Tensor:
        """(..., H) -> (..., H)."""
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _linear_like(src: nn.Linear, weight: Tensor, bias: Tensor | None) -> nn.Linear:
    shape = (weight.shape[1], weight.shape[0])
    out = skip_init(nn.Linear, *shape, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None and out.bias is not None:
            out.bias.copy_(bias)
    out.requires_grad_(src.weight.requires_grad)
    return out


def _rows(linear: nn.Linear, keep: Tensor) -> nn.Linear:
    bias = None if linear.bias is None else linear.bias.detach()[keep]
    return _linear_like(linear, linear.weight.detach()[keep], bias)


def _columns(linear: nn.Linear, keep: Tensor) -> nn.Linear:
    bias = None if linear.bias is None else linear.bias.detach()
    return _linear_like(linear, linear.weight.detach()[:, keep], bias)


def restrict_gated_ffn(ffn: GatedFFN, keep: Tensor) -> GatedFFN:
    """lmbricks' dense FFN restricted to the neurons ``keep`` (k,): a GatedFFN of width k.

    The fused gate/up rows keep their layout (gate rows ``keep``, then up rows ``I + keep``), so the
    restriction runs the very same forward; with every neuron kept it is an exact copy.
    """
    half = ffn.gate_up.out_features // 2
    with torch.device("meta"):  # both projections are replaced below: no initialisation
        out = GatedFFN(ffn.gate_up.in_features, int(keep.numel()), ffn.activation, ffn.threshold)
    w = ffn.gate_up.weight.detach()
    out.gate_up = _linear_like(ffn.gate_up, torch.cat([w[keep], w[half + keep]]), None)
    out.down = _columns(ffn.down, keep)
    return out


@dataclass
class FFNSite:
    """Where one FFN lives: ``getattr(parent, attr) is module``; ``down`` reads its intermediate activation;
    ``block`` is its Hugging Face parts (None for lmbricks' GatedFFN)."""

    parent: nn.Module
    attr: str
    module: nn.Module
    down: nn.Linear
    block: FFNBlock | None = None

    @property
    def width(self) -> int:
        """Intermediate neurons I."""
        return int(self.down.weight.shape[1])

    def restricted(self, keep: Tensor) -> nn.Module:
        """The FFN restricted to the neurons ``keep``."""
        if isinstance(self.module, GatedFFN):
            return restrict_gated_ffn(self.module, keep)
        assert self.block is not None
        return RestrictedMLP(self.block, keep)


def ffn_sites(model: nn.Module) -> list[FFNSite]:
    """The dense gated FFNs of lmbricks' LM (GatedFFN) or of a Hugging Face Llama-family model, in order.

    Raises:
        ConfigError: the model has no dense gated FFN (an MoE, or a plain-MLP architecture).
    """
    named = dict(model.named_modules())
    sites: list[FFNSite] = []
    for name, module in named.items():
        if isinstance(module, GatedFFN):
            sites.append(_site(named, name, module, module.down, None))
    if sites:
        return sites
    for block in find_ffns(model):
        if block.kind != "glu" or block.up.bias is not None or block.gate is None:
            raise ConfigError(f"FFN block {block.name!r}: GRIFFIN needs a bias-free gated FFN (gate/up/down)")
        sites.append(_site(named, block.name, block.module, block.down, block))
    return sites


def _site(
    named: dict[str, nn.Module], name: str, module: nn.Module, down: nn.Linear, block: FFNBlock | None
) -> FFNSite:
    parent, _, attr = name.rpartition(".")
    return FFNSite(named[parent], attr, module, down, block)


class Griffin:
    """GRIFFIN on one model and one sequence at a time: dense prompt, restricted FFNs while generating.

    Usage::

        with Griffin(model, keep=0.5) as g:
            logits = model(prompt_ids, cache=cache).logits  # dense; the statistic is collected
            g.prune()                                       # every FFN keeps its top 50% neurons
            ...                                             # decode with the cache
        # the dense FFNs are back

    Every forward between entering the block and the first :meth:`prune` counts as prompt (a prompt
    can be prefilled in chunks). Only batches of one sequence are accepted while collecting.
    :meth:`prune` may be called again with another fraction (the statistic is kept) and
    :meth:`restore` puts the dense FFNs back before the block ends.
    """

    def __init__(self, model: nn.Module, keep: float = 0.5) -> None:
        griffin_select(torch.ones(1), keep)  # validates keep before any work
        self.model, self.keep = model, keep
        self.sites = ffn_sites(model)
        self.sums: list[Tensor | None] = [None] * len(self.sites)
        self.selected: list[Tensor] | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> Griffin:
        for i, site in enumerate(self.sites):
            self._handles.append(site.down.register_forward_pre_hook(self._collector(i)))
        return self

    def _collector(self, i: int) -> Any:
        def hook(_mod: nn.Module, args: tuple[Tensor, ...]) -> None:
            z = args[0]
            if z.dim() == 3 and z.shape[0] != 1:
                raise ConfigError(f"GRIFFIN selects per sequence: one prompt at a time, got a batch of {z.shape[0]}")
            s = normalised_square_sums(z)
            prev = self.sums[i]
            self.sums[i] = s if prev is None else prev + s

        return hook

    def _unhook(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def prune(self, keep: float | None = None) -> list[Tensor]:
        """Stop collecting, select each FFN's neurons and swap in the restricted FFNs.

        Args:
            keep: the fraction kept (default: the one given at construction).

        Returns:
            Per FFN, the kept neuron indices (k,), sorted.

        Raises:
            ConfigError: no prompt was run since entering the block, or ``keep`` outside (0, 1].
        """
        self._unhook()
        if any(s is None for s in self.sums):
            raise ConfigError("GRIFFIN: run the prompt through the model before prune()")
        fraction = self.keep if keep is None else keep
        self.selected = [griffin_select(s.sqrt(), fraction) for s in self.sums if s is not None]
        for site, kept in zip(self.sites, self.selected, strict=True):
            setattr(site.parent, site.attr, site.restricted(kept.to(site.down.weight.device)))
        return self.selected

    def restore(self) -> None:
        """Put the dense FFNs back (the statistic is kept; :meth:`prune` may be called again)."""
        for site in self.sites:
            setattr(site.parent, site.attr, site.module)

    def __exit__(self, *_exc: object) -> None:
        self._unhook()
        self.restore()
