"""Greedy decoding after a compressed prefill, with a KV cache: the prompt's groups compressed, new tokens not.

The prefill runs the lower ``layer`` layers on the whole prompt and the upper layers on its
compressed sequence (complete groups, then the uncompressed rest, as in
:func:`lmbricks.plugins.accelerate.forward.compressed_upper` with ``keep_last``), keeping every
layer's keys and values. Each decoded token then runs through all layers as one uncompressed vector
at its true position and attends to the cache: in the lower layers to every prompt token, in the
upper layers to the compressed groups and the uncompressed tokens. This equals re-running
:func:`~lmbricks.plugins.accelerate.forward.compressed_hidden` on the prompt plus the tokens so far
with those tokens kept uncompressed (``tests/plugins/test_accelerate_generate.py`` checks it).

``keep_last`` (default 1) keeps the prompt's last tokens out of the groups, so the first new token is
predicted by the upper layers, like every later one, not through the decompression layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lmbricks.nn.model import LM, KVCache
from lmbricks.plugins.accelerate.forward import run_layers, split_point
from lmbricks.plugins.accelerate.layers import AcceleratePlugin


def compressed_prefill(
    model: LM, plugin: AcceleratePlugin | None, ids: Tensor, cache: KVCache, keep_last: int
) -> Tensor:
    """(1, T) prompt -> (1, V) logits of its last token, filling ``cache`` (plain model when ``plugin`` is None)."""
    T, L = ids.shape[1], model.cfg.num_layers
    x = model.embed(ids)  # (1, T, H)
    if plugin is None:
        return model.lm_head(model.norm(run_layers(model, x, torch.arange(T), 0, L, cache)[:, -1]))
    r, low = plugin.ratio, plugin.layer
    x = run_layers(model, x, torch.arange(T), 0, low, cache)  # (1, T, H)
    P = split_point(T, r, keep_last)
    G = P // r
    z = plugin.compress(x[:, :P].reshape(1, G, r, x.shape[-1]))  # (1, G, H)
    positions = torch.cat([torch.arange(G) * r + (r - 1), torch.arange(P, T)])
    upper = run_layers(model, torch.cat([z, x[:, P:]], dim=1), positions, low, L, cache)  # (1, G + T - P, H)
    if P == T:  # every prompt token is in a group: the last one ends the last group (decompression)
        return model.lm_head(model.norm(plugin.decompress(upper[:, -1:], x[:, -1:])[:, -1]))
    return model.lm_head(model.norm(upper[:, -1]))


@torch.inference_mode()
def greedy(
    model: LM, plugin: AcceleratePlugin | None, ids: Tensor, max_new_tokens: int, keep_last: int = 1,
    stop: Callable[[list[int]], bool] | None = None,
) -> list[int]:  # fmt: skip
    """Greedy continuation of a (1, T) prompt: at most ``max_new_tokens`` new token ids.

    Args:
        plugin: the acceleration plug-in (None: the plain model, the same cached decoding).
        keep_last: prompt tokens left out of the groups (see the module docstring).
        stop: called with the new ids after each token; True ends the generation.
    """
    cache = KVCache(model.cfg.num_layers)
    logits = compressed_prefill(model, plugin, ids, cache, keep_last)  # (1, V)
    out: list[int] = []
    position = ids.shape[1]
    while len(out) < max_new_tokens:
        out.append(int(logits.argmax(-1)))
        if stop is not None and stop(out) or len(out) == max_new_tokens:
            break
        x = run_layers(model, model.embed(torch.tensor([[out[-1]]])), torch.tensor([position]), 0, model.cfg.num_layers,
                 cache)  # fmt: skip
        logits = model.lm_head(model.norm(x[:, -1]))
        position += 1
    return out
