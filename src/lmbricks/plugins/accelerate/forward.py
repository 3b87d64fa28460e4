"""The causal compressed forward pass of lmbricks' LM with an acceleration plug-in.

How causality is kept in a decoder (Variator compresses an encoder, where it does not arise):

- The lower ``layer`` layers run on all T tokens as usual.
- Only **complete groups of the prefix** are compressed: the first ``P = r * floor((T - keep_last) / r)``
  tokens make ``G = P / r`` groups of r consecutive tokens; group g is merged into one vector z_g.
  The last ``T - P`` tokens (the partial group, and the ``keep_last`` tokens the caller wants
  uncompressed, such as a continuation to score or the tokens decoded next) stay one vector each.
- The upper layers run on ``[z_0 .. z_{G-1}, h_P .. h_{T-1}]`` with ordinary causal attention. z_g
  sits at the position of its group's **last** token, so it is seen only by what comes after that
  token, and every vector in a group is at or before it: no vector mixes a token with a later one.
- Decompression gives every prefix token t an output from the latest group that ends at or before t
  (its own group when t ends it, else the previous one) and from its own lower-layer vector. The first
  ``r - 1`` tokens have no complete group before them and use their own lower-layer vector.

So the logits at position t depend only on tokens 0..t (``tests/plugins/test_accelerate_core.py``
checks it by changing later tokens).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM, KVCache, LayerInputs, rope_cos_sin
from lmbricks.plugins.accelerate.layers import AcceleratePlugin


def split_point(length: int, ratio: int, keep_last: int) -> int:
    """Tokens of the compressed prefix: ``ratio * floor((length - keep_last) / ratio)`` (at least 0)."""
    return ratio * (max(length - keep_last, 0) // ratio)


def source_groups(prefix: int, ratio: int) -> Tensor:
    """For each prefix token t (prefix,), the latest group ending at or before t: ``(t + 1) // r - 1`` (-1: none)."""
    return (torch.arange(prefix) + 1) // ratio - 1


def check_plugin(model: LM, plugin: AcceleratePlugin) -> None:
    """Refuse a plug-in whose shape does not fit ``model``.

    Raises:
        ConfigError: the hidden size or the layer does not fit the model (names the field).
    """
    if not isinstance(model, LM):
        raise ConfigError(f"{type(model).__name__}: acceleration plug-ins need lmbricks' LM (load_model gives one)")
    hidden = plugin.decompress.up.out_features
    if hidden != model.cfg.hidden_size:
        raise ConfigError(f"plug-in hidden size {hidden} != the model's hidden_size {model.cfg.hidden_size}")
    if not 1 <= plugin.layer < model.cfg.num_layers:
        raise ConfigError(f"plug-in layer {plugin.layer} is outside 1..{model.cfg.num_layers - 1} for this model")


def run_layers(model: LM, x: Tensor, positions: Tensor, first: int, last: int, cache: KVCache | None = None) -> Tensor:
    """Layers ``first..last-1`` on (B, n, H) vectors at ``positions`` (n,), causal.

    With ``cache``, each layer appends its keys and values to it; n > 1 only on an empty cache (a
    prefill), n = 1 after it (one decoded token attends to everything cached).
    """
    assert model.cfg.head_dim is not None
    cos, sin = rope_cos_sin(positions, model.cfg.head_dim, model.cfg.rope_theta, x.dtype)  # (n, hd)
    inputs = LayerInputs(cos, sin, None, x.shape[1] > 1, cache)
    for block in model.layers[first:last]:
        x, _ = block(x, inputs)
    return x


def lower_hidden(model: LM, layer: int, input_ids: Tensor) -> Tensor:
    """(B, T) ids -> (B, T, H): the first ``layer`` layers on the full sequence (shared by teacher and plug-in)."""
    return run_layers(
        model, model.embed(input_ids), torch.arange(input_ids.shape[1], device=input_ids.device), 0, layer
    )


def plain_upper(model: LM, layer: int, lower: Tensor) -> Tensor:
    """(B, T, H) vectors after ``layer`` layers -> (B, T, H) final-norm hidden states of the plain model."""
    T = lower.shape[1]
    return model.norm(run_layers(model, lower, torch.arange(T, device=lower.device), layer, model.cfg.num_layers))


def compressed_upper(
    model: LM, plugin: AcceleratePlugin, lower: Tensor, keep_last: int = 0, prefix_outputs: bool = True
) -> Tensor:
    """Compress (B, T, H) vectors after ``plugin.layer`` layers, run the upper layers, restore the prefix.

    Returns:
        (B, T, H) final-norm hidden states, or (B, T - P, H) for the tail only when ``prefix_outputs``
        is False (see :func:`compressed_hidden`).
    """
    B, T, H = lower.shape
    device = lower.device
    r, low = plugin.ratio, plugin.layer
    P = split_point(T, r, keep_last)
    G = P // r
    z = plugin.compress(lower[:, :P].reshape(B, G, r, H))  # (B, G, H)
    positions = torch.cat([torch.arange(G, device=device) * r + (r - 1), torch.arange(P, T, device=device)])
    upper = run_layers(
        model, torch.cat([z, lower[:, P:]], dim=1), positions, low, model.cfg.num_layers
    )  # (B, G+T-P, H)
    tail = upper[:, G:]  # (B, T - P, H)
    if not prefix_outputs:
        return model.norm(tail)
    source = source_groups(P, r).to(device)  # (P,)
    own = lower[:, :P]  # (B, P, H)
    picked = upper[:, source.clamp(min=0)]  # (B, P, H) the source group's upper output
    base = torch.where((source >= 0)[None, :, None], picked, own)
    restored = plugin.decompress(base, own)  # (B, P, H)
    return model.norm(torch.cat([restored, tail], dim=1))


def compressed_hidden(
    model: LM, plugin: AcceleratePlugin | None, input_ids: Tensor, keep_last: int = 0, prefix_outputs: bool = True
) -> Tensor:
    """Final-norm hidden states with the sequence compressed between layer ``plugin.layer`` and the top.

    Args:
        model: the frozen base LM.
        plugin: the plug-in, or None for the plain model (all layers on all tokens).
        input_ids: (B, T) token ids (unpadded).
        keep_last: tokens at the end that stay uncompressed in the upper layers.
        prefix_outputs: also restore the compressed prefix tokens (False: only the uncompressed tail,
            which is all a prefill needs when the prompt ends at a group's end or in the tail).

    Returns:
        (B, T, H) hidden states, or (B, T - P, H) for the tail only when ``prefix_outputs`` is False.
    """
    if plugin is None:
        return plain_upper(model, 0, model.embed(input_ids))
    lower = lower_hidden(model, plugin.layer, input_ids)  # (B, T, H) lower layers, full sequence
    return compressed_upper(model, plugin, lower, keep_last, prefix_outputs)


def compressed_logits(model: LM, plugin: AcceleratePlugin | None, input_ids: Tensor, keep_last: int = 0) -> Tensor:
    """(B, T) ids -> (B, T, V) logits of every position (see :func:`compressed_hidden`)."""
    return model.lm_head(compressed_hidden(model, plugin, input_ids, keep_last))


def prefill_logits(model: LM, plugin: AcceleratePlugin | None, input_ids: Tensor) -> Tensor:
    """A prefill: (B, T) prompt -> (B, V) logits of its last token, the prefix compressed by ``plugin``.

    With ``T`` a multiple of r the last token ends the last group: its output is that group's upper
    vector restored with the token's own (as in :func:`compressed_hidden`); otherwise it is in the
    uncompressed tail. Only the last position goes through the head.
    """
    if plugin is None or input_ids.shape[1] % plugin.ratio:
        h = compressed_hidden(model, plugin, input_ids, 0, prefix_outputs=False)
        return model.lm_head(h[:, -1])
    B, T = input_ids.shape
    x = run_layers(model, model.embed(input_ids), torch.arange(T), 0, plugin.layer)
    z = plugin.compress(x.reshape(B, T // plugin.ratio, plugin.ratio, x.shape[-1]))
    positions = torch.arange(T // plugin.ratio) * plugin.ratio + (plugin.ratio - 1)
    upper = run_layers(model, z, positions, plugin.layer, model.cfg.num_layers)
    restored = plugin.decompress(upper[:, -1:], x[:, -1:])  # (B, 1, H)
    return model.lm_head(model.norm(restored[:, -1]))
