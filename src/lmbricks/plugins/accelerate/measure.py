"""Figures of an acceleration plug-in: prefill FLOPs and CPU time, and bits per byte against two baselines.

Bits per byte are measured on **continuations**: each held-out window of ``T`` tokens is a prompt of
``T - keep`` tokens followed by ``keep`` tokens scored one after another (causally, as decoding
would see them). Three ways to read the prompt are compared at equal scored tokens:

- ``plain``: the base model on the whole prompt;
- ``plugin``: the prompt's complete groups compressed after layer ``l`` (the continuation stays uncompressed);
- ``truncated``: the base model on the prompt's last tokens only, as many as cost the same layer-token work.

``all_positions`` also scores every position of the window with the plug-in compressing it entirely
(the prefix tokens' predictions then come through the decompression layer).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbricks.nn.model import LM
from lmbricks.plugins.accelerate.forward import compressed_logits, prefill_logits, split_point
from lmbricks.plugins.accelerate.layers import AcceleratePlugin


def prefill_flops(model: LM, length: int, plugin: AcceleratePlugin | None) -> float:
    """Matmul FLOPs of a prefill of ``length`` tokens (layers and the last token's head; causal attention).

    A layer on n vectors costs ``2 n p + 2 n^2 d`` (p: the layer's weights, d = heads * head_dim: the
    QK and AV products over a causal half of n^2, two FLOPs each); the plug-in adds its own matmuls.
    """
    c = model.cfg
    assert c.head_dim is not None and c.num_kv_heads is not None
    per_layer = (
        c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim + c.num_heads * c.head_dim * c.hidden_size
    )
    per_layer += 3 * c.hidden_size * c.intermediate_size
    d = c.num_heads * c.head_dim

    def layers(n: int, count: int) -> float:
        return count * (2.0 * n * per_layer + 2.0 * n * n * d)

    head = 2.0 * c.hidden_size * c.vocab_size
    if plugin is None:
        return layers(length, c.num_layers) + head
    short = length // plugin.ratio + length % plugin.ratio
    extra = (
        2.0 * (length // plugin.ratio) * plugin.num_parameters() / 2
    )  # each plug-in weight used about once per group
    return layers(length, plugin.layer) + layers(short, c.num_layers - plugin.layer) + extra + head


def prefill_cpu_seconds(model: LM, plugin: AcceleratePlugin | None, ids: Tensor, repeats: int = 3) -> float:
    """Median process CPU seconds of :func:`prefill_logits` on (1, T) ``ids`` (after one warm-up)."""
    times = []
    with torch.inference_mode():
        prefill_logits(model, plugin, ids)
        for _ in range(repeats):
            start = time.process_time()
            prefill_logits(model, plugin, ids)
            times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def truncated_context(model: LM, plugin: AcceleratePlugin, length: int, keep: int) -> int:
    """Prompt tokens the plain model may read for the layer-token work of the plug-in on ``length`` tokens."""
    L, low = model.cfg.num_layers, plugin.layer
    prefix = split_point(length, plugin.ratio, keep)
    work = low * length + (L - low) * (prefix // plugin.ratio + length - prefix)
    return max(0, min(prefix, round(work / L) - (length - prefix)))


def _nll_bits(logits: Tensor, targets: Tensor) -> float:
    """Sum of -log2 p(target) over (n, V) logits and (n,) targets."""
    return float(F.cross_entropy(logits.float(), targets, reduction="sum")) / math.log(2)


def window_bits(model: LM, plugin: AcceleratePlugin, ids: Tensor, keep: int) -> dict[str, float]:
    """Bits of the continuation of one (1, T) window for plain / plugin / truncated, and of all positions."""
    T = ids.shape[1]
    P = split_point(T, plugin.ratio, keep)
    targets = ids[0, P + 1 :]  # the continuation tokens predicted from within the continuation
    cut = P - truncated_context(model, plugin, T, keep)
    with torch.inference_mode():
        plain = model(ids).logits[0]
        bits = {
            "plain": _nll_bits(plain[P:-1], targets),
            "plugin": _nll_bits(compressed_logits(model, plugin, ids, keep)[0, P:-1], targets),
            "truncated": _nll_bits(model(ids[:, cut:]).logits[0, P - cut : -1], targets),
            "plain_all": _nll_bits(plain[:-1], ids[0, 1:]),
            "plugin_all": _nll_bits(compressed_logits(model, plugin, ids, 0)[0, :-1], ids[0, 1:]),
        }
    return bits


def domain_bpb(
    model: LM, tokenizer: Any, plugin: AcceleratePlugin, windows: Tensor, keep: int,
    on_window: Callable[[int], None] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Bits per byte of each reading over (N, T) windows of one domain (bytes: the scored tokens' text)."""
    T = windows.shape[1]
    P = split_point(T, plugin.ratio, keep)
    total: dict[str, float] = {}
    tail_bytes = all_bytes = 0
    for i, row in enumerate(windows):
        for name, value in window_bits(model, plugin, row[None], keep).items():
            total[name] = total.get(name, 0.0) + value
        tail_bytes += len(tokenizer.decode(row[P + 1 :].tolist()).encode("utf-8"))
        all_bytes += len(tokenizer.decode(row[1:].tolist()).encode("utf-8"))
        if on_window is not None:
            on_window(i + 1)
    return {k: v / (all_bytes if k.endswith("_all") else tail_bytes) for k, v in total.items()}


def measure_plugin(
    model: LM, tokenizer: Any, plugin: AcceleratePlugin, texts: dict[str, str], seq_len: int = 256, keep: int = 64,
    windows: int = 4, prompt: int = 1024, on_window: Callable[[int], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Prefill FLOPs and CPU time saved at ``prompt`` tokens, and bits per byte by domain.

    Args:
        texts: held-out text by domain.
        seq_len, keep, windows: window length, scored continuation, windows per domain.
        prompt: the prefill length timed.
    """
    from lmbricks.data.tokens import token_chunks

    ids = torch.arange(prompt)[None] % model.cfg.vocab_size
    plain_s, plug_s = prefill_cpu_seconds(model, None, ids), prefill_cpu_seconds(model, plugin, ids)
    plain_f, plug_f = prefill_flops(model, prompt, None), prefill_flops(model, prompt, plugin)
    bpb = {}
    for domain, text in texts.items():
        chunks = token_chunks(tokenizer, [text], seq_len, windows * seq_len)
        bpb[domain] = domain_bpb(model, tokenizer, plugin, chunks, keep, on_window)
    return {
        "ratio": plugin.ratio, "layer": plugin.layer, "parameters": plugin.num_parameters(),
        "parameters_share": plugin.num_parameters() / model.num_parameters(),
        "prefill_tokens": prompt, "prefill_cpu_s": {"plain": plain_s, "plugin": plug_s},
        "prefill_cpu_saved": 1 - plug_s / plain_s, "prefill_flops_saved": 1 - plug_f / plain_f,
        "truncated_context": truncated_context(model, plugin, seq_len, keep), "seq_len": seq_len, "keep": keep,
        "bpb": bpb, "bpb_mean": {k: sum(d[k] for d in bpb.values()) / len(bpb) for k in next(iter(bpb.values()))},
    }  # fmt: skip
