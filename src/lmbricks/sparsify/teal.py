"""TEAL (arXiv 2408.14690): training-free magnitude sparsity of the hidden states entering every linear layer.

TEAL (Training-Free Activation Sparsity in Large Language Models) zeroes, at the input of each
linear projection of each block, the entries whose magnitude is at most a per-projection threshold
``t``, chosen on calibration text as the ``sparsity`` quantile of that input's ``|x|`` (the same
target for every projection: TEAL's uniform allocation, not its greedy per-layer one). On lmbricks'
LM the projections are, per block, the fused ``qkv`` (the attention norm's output, shared by q, k
and v, sparsified once), ``o`` (the attention's output), the fused ``gate_up`` (the FFN norm's
output) and ``down`` (the FFN's intermediate activation): four thresholds per block. The embedding
and the LM head are left dense, as in TEAL. The fused projections are computed by ``split_linear``
from their weights (no module call), so their input is masked where it enters the attention and the
FFN module, the only consumers of those inputs.

Here TEAL is a quality measurement (:class:`Teal` masks the inputs with forward pre-hooks; the
products stay dense): it has no sparse kernel in lmbricks, so ``sparsify evaluate --method teal``
reports perplexity changes and no speed. With every threshold 0 it is the dense model bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.nn.ffn import GatedFFN
from lmbricks.nn.model import LM
from lmbricks.sparsify.cats import quantile_threshold, site_quantiles, threshold_mask

#: Per block of lmbricks' LM, the modules whose first input TEAL thresholds, in this order: the
#: attention (its input feeds ``qkv`` only), its output projection ``o``, the dense gated FFN (its
#: input feeds ``gate_up`` only) and its ``down`` projection.
SITES: tuple[str, ...] = ("attn", "attn.o", "ffn", "ffn.down")


def teal_sites(model: nn.Module) -> list[nn.Module]:
    """Every block's :data:`SITES` modules, block by block (4 per block).

    Raises:
        ConfigError: ``model`` is not lmbricks' LM with dense gated FFNs.
    """
    if not isinstance(model, LM):
        raise ConfigError("TEAL runs on lmbricks' LM; load the model with lmbricks.load_model")
    out: list[nn.Module] = []
    for i, block in enumerate(model.layers):
        if not isinstance(block.ffn, GatedFFN):
            raise ConfigError(f"TEAL: layer {i}'s FFN is not a dense gated FFN (GatedFFN)")
        out += [block.get_submodule(path) for path in SITES]
    return out


class Teal:
    """``with Teal(model, thresholds):`` every :func:`teal_sites` input is magnitude-thresholded.

    Args:
        model: lmbricks' LM.
        thresholds: one t >= 0 per site of :func:`teal_sites`, in its order (:func:`calibrate_teal`).
        count: count the zeroed input entries (:meth:`zero_fractions`).

    Raises:
        ConfigError: the thresholds do not match the sites.
    """

    def __init__(self, model: nn.Module, thresholds: list[float], count: bool = False) -> None:
        self.sites = teal_sites(model)
        if len(thresholds) != len(self.sites) or any(t < 0 for t in thresholds):
            raise ConfigError(f"thresholds: {len(self.sites)} values >= 0 expected (one per site), got {thresholds}")
        self.thresholds, self.count = thresholds, count
        self.counts = [[0, 0] for _ in thresholds]  # [zeroed, total] per site
        self._handles: list[Any] = []

    def __enter__(self) -> Teal:
        for i, (site, t) in enumerate(zip(self.sites, self.thresholds, strict=True)):
            self._handles.append(site.register_forward_pre_hook(self._masker(i, t)))
        return self

    def _masker(self, i: int, t: float) -> Any:
        def hook(_mod: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
            if t <= 0 and not self.count:
                return None  # threshold 0: the input unchanged (the dense model bit for bit)
            x = threshold_mask(args[0], t) if t > 0 else args[0]
            if self.count:
                self.counts[i][0] += int((x == 0).sum())
                self.counts[i][1] += x.numel()
            return (x, *args[1:])

        return hook

    def zero_fractions(self) -> list[float]:
        """Per site, the fraction of input entries that were zero so far (``count=True``)."""
        return [z / max(1, n) for z, n in self.counts]

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def calibrate_teal(model: nn.Module, blocks: Tensor, sparsity: float, per_site: int = 1_000_000) -> list[float]:
    """Per-site thresholds that zero ``sparsity`` of each site's input entries on calibration ``blocks`` (B, T).

    Args:
        model: lmbricks' LM (dense; the thresholds of later layers are read on the dense model's inputs).
        blocks: calibration token ids.
        sparsity: the target fraction of zeroed input entries, in [0, 1).
        per_site: at most this many magnitudes per site are kept for the quantile (a random subsample).

    Returns:
        One threshold per site of :func:`teal_sites`, in its order.
    """
    quantile_threshold(torch.ones(1), sparsity)  # validates before the forward
    return site_quantiles(model, blocks, teal_sites(model), lambda _mod, x: x.abs(), sparsity, per_site)
