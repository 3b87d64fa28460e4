"""The recovery curve's measurements: per-domain bits per byte and the gates' exact-zero fraction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.nn.ffn import GatedFFN, gate_activation


@contextmanager
def gate_tap(model: nn.Module, keep: Callable[[Tensor, Tensor], None]) -> Iterator[None]:
    """Call ``keep(g, act(g))`` with each dense FFN's gate (..., I) on every forward inside the block.

    The activation-L1 accumulators are paused meanwhile, so a measurement between training steps
    does not leak into the next step's penalty.
    """

    def hook(mod: nn.Module, inp: tuple[Tensor, ...], _out: Any) -> None:
        assert isinstance(mod, GatedFFN)
        half = mod.gate_up.out_features // 2
        g = inp[0] @ mod.gate_up.weight[:half].T  # (..., I)
        keep(g, gate_activation(g, mod.activation, mod.threshold))

    ffns = [m for m in model.modules() if isinstance(m, GatedFFN)]
    tracking = [m.track_l1 for m in ffns]
    for m in ffns:
        m.track_l1 = False  # a measurement is no part of a training step's penalty
    handles = [m.register_forward_hook(hook) for m in ffns]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m, t in zip(ffns, tracking, strict=True):
            m.track_l1 = t


@torch.no_grad()
def measure(model: nn.Module, tokenizer: Any, texts: dict[str, str], tokens: int, seq_len: int) -> dict[str, Any]:
    """Bits per byte and exact-zero fraction of the gate activations, per domain and their mean.

    Args:
        model: an lmbricks LM (dense).
        tokenizer: its tokenizer.
        texts: domain -> held-out text.
        tokens: tokens scored per domain.
        seq_len: window length.

    Returns:
        ``{"bpb": {domain: float}, "zero_fraction": {domain: float}, "mean_bpb", "mean_zero_fraction"}``.
    """
    from lmbricks.eval.perplexity import evaluate_text

    was_training = model.training
    model.eval()
    bpb, zeros = {}, {}
    for domain, text in texts.items():
        counts = [0, 0]

        def keep(_g: Tensor, a: Tensor, c: list[int] = counts) -> None:
            c[0] += int((a == 0).sum())
            c[1] += a.numel()

        with gate_tap(model, keep):
            bpb[domain] = evaluate_text(model, tokenizer, text, max_tokens=tokens, seq_len=seq_len).bpb
        zeros[domain] = counts[0] / max(1, counts[1])
    model.train(was_training)
    n = max(1, len(texts))
    return {
        "bpb": bpb,
        "zero_fraction": zeros,
        "mean_bpb": sum(bpb.values()) / n,
        "mean_zero_fraction": sum(zeros.values()) / n,
    }


@torch.no_grad()
def calibration_gates(model: nn.Module, blocks: Tensor, per_layer: int = 200_000) -> Tensor:
    """A sample of gate pre-activations (N,) over ``blocks`` (B, T) of calibration text, every layer alike."""
    parts: list[Tensor] = []

    def keep(g: Tensor, _a: Tensor) -> None:
        flat = g.float().flatten()
        step = max(1, flat.numel() // per_layer)
        parts.append(flat[::step])

    model.eval()
    with gate_tap(model, keep):
        model(blocks)
    return torch.cat(parts)
