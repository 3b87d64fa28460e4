"""Evaluate a MoEfied model: perplexity versus experts used, FFN time and model tokens/s versus dense.

Timings interleave the candidates round by round and keep each one's median, so a machine whose
load changes during the run biases none of them (the CPUs here are shared).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.analysis.corpus import perplexities, relative_change
from lmbricks.hub.hf_compat import output_cache, with_cache
from lmbricks.moefy.convert import mean_fraction, moefied_layers, set_routing


@dataclass
class CurvePoint:
    """Perplexity per domain at one setting."""

    mode: str
    top_k: int | None
    fraction: float
    ppl: dict[str, float]


@dataclass
class MoefyEval:
    """Perplexity curve and timings (changes relative to the dense baseline, 0.10 = +10%)."""

    dense_ppl: dict[str, float]
    points: list[CurvePoint] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)

    def change(self, point: CurvePoint) -> float:
        """Mean relative perplexity change of a point over the domains."""
        return sum(relative_change(point.ppl, self.dense_ppl).values()) / len(point.ppl)

    def find(self, mode: str, top_k: int) -> CurvePoint | None:
        return next((p for p in self.points if p.mode == mode and p.top_k == top_k), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_change"] = [
            {"mode": p.mode, "top_k": p.top_k, "fraction": p.fraction, "change": self.change(p)} for p in self.points
        ]
        return d


def ppl_curve(
    model: nn.Module,
    chunks: Mapping[str, torch.Tensor],
    ks: Sequence[int],
    modes: Sequence[str] = ("oracle", "router"),
    dynamic: Sequence[float] = (),
    on_step: Callable[[str], None] | None = None,
) -> MoefyEval:
    """Perplexity per domain for each mode and K (plus dynamic-K thresholds), and the dense baseline.

    Args:
        model: a MoEfied model; its routing settings are restored afterwards.
        chunks: ``{domain: (N, T) token blocks}``.
        ks: experts per token to evaluate.
        modes: ``oracle`` and/or ``router``.
        dynamic: mass-share thresholds for dynamic K (router mode).
        on_step: progress callback.

    Returns:
        A :class:`MoefyEval` (timings empty).
    """
    step = on_step or (lambda _m: None)
    layers = moefied_layers(model)
    saved = [(m.mode, m.top_k, m.dynamic_threshold) for m in layers]
    num_experts, shared = layers[0].num_experts, layers[0].shared_experts
    try:
        step("dense baseline")
        set_routing(model, mode="dense")
        result = MoefyEval(perplexities(model, chunks))
        for mode in modes:
            for k in ks:
                step(f"{mode} K={k}")
                set_routing(model, mode=mode, top_k=k, dynamic_threshold=None)  # type: ignore[arg-type]
                result.points.append(CurvePoint(mode, k, (k + shared) / num_experts, perplexities(model, chunks)))
        for threshold in dynamic:
            step(f"dynamic K, mass {threshold}")
            set_routing(model, mode="router", dynamic_threshold=threshold)
            fractions: list[float] = []
            handle = model.register_forward_hook(lambda *_, f=fractions: f.append(mean_fraction(model)))
            try:
                ppl = perplexities(model, chunks)
            finally:
                handle.remove()
            result.points.append(CurvePoint(f"dynamic {threshold:g}", None, statistics.fmean(fractions), ppl))
    finally:
        for m, (mode, k, thr) in zip(layers, saved, strict=True):
            m.mode, m.top_k, m.dynamic_threshold = mode, k, thr  # type: ignore[assignment]
    return result


class DenseFFN(nn.Module):
    """A dense gated FFN ``down(act(gate(x)) * up(x))``: the reference MoEfied FFNs are timed against.

    Args:
        gate: (I, H) gate rows.
        up: (I, H) up rows.
        down: (H, I) down projection.
        act: the gate activation.
    """

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, act: Any) -> None:
        super().__init__()
        self.gate = nn.Linear(gate.shape[1], gate.shape[0], bias=False)
        self.up = nn.Linear(up.shape[1], up.shape[0], bias=False)
        self.down = nn.Linear(down.shape[1], down.shape[0], bias=False)
        with torch.no_grad():
            self.gate.weight.copy_(gate)
            self.up.weight.copy_(up)
            self.down.weight.copy_(down)
        self.act = act

    @classmethod
    def of(cls, moefied: Any) -> DenseFFN:
        """The dense FFN holding the same neurons as a :class:`~lmbricks.moefy.runtime.MoefiedFFN`."""
        gate, up, down = (w.detach().clone() for w in moefied.dense_weights())
        return cls(gate, up, down, moefied.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., H)."""
        return self.down(self.act(self.gate(x)) * self.up(x))


def interleaved_medians(fns: Mapping[str, Callable[[], Any]], rounds: int = 15, warmup: int = 2) -> dict[str, float]:
    """Median wall time (seconds) of each function, measured round-robin."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for r in range(rounds + warmup):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                if r >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def time_ffn(
    dense: nn.Module, moefied: Any, hidden: int, ks: Sequence[int], tokens: int, rounds: int = 15
) -> dict[str, float]:
    """Speedup of one MoEfied FFN (router mode) over the dense FFN at each K.

    Args:
        dense: the original FFN module (input (N, H)).
        moefied: a :class:`~lmbricks.moefy.runtime.MoefiedFFN` with a router.
        hidden: H.
        ks: experts per token.
        tokens: N (1 for decoding).
        rounds: timing rounds.

    Returns:
        ``{"dense_ms": ..., "K=k_ms": ..., "K=k_speedup": ...}``.
    """
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(0))
    saved = (moefied.mode, moefied.top_k, moefied.dynamic_threshold)

    def at(k: int) -> Callable[[], Any]:
        def run() -> Any:
            moefied.mode, moefied.top_k, moefied.dynamic_threshold = "router", k, None
            return moefied(x)

        return run

    fns: dict[str, Callable[[], Any]] = {"dense": lambda: dense(x)}
    fns.update({f"K={k}": at(k) for k in ks})
    try:
        med = interleaved_medians(fns, rounds)
    finally:
        moefied.mode, moefied.top_k, moefied.dynamic_threshold = saved
    out = {"dense_ms": 1e3 * med["dense"]}
    for k in ks:
        out[f"K={k}_ms"] = 1e3 * med[f"K={k}"]
        out[f"K={k}_speedup"] = med["dense"] / med[f"K={k}"]
    return out


def time_model(
    dense_model: Any,
    moefied_model: Any,
    ks: Sequence[int],
    batch: int = 4,
    seq_len: int = 256,
    decode_steps: int = 16,
    rounds: int = 5,
) -> dict[str, float]:
    """Whole-model tokens/s of the MoEfied model (router mode) at each K versus the dense model.

    Prefill: one forward of (batch, seq_len) random tokens. Decode: ``decode_steps`` one-token
    steps with the KV cache after a 32-token prompt (batch 1).

    Returns:
        ``{"prefill_dense_tok_s", "prefill_K=k_tok_s", "prefill_K=k_speedup", "decode_...": ...}``.
    """
    vocab = int(dense_model.config.vocab_size)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    prompt = ids[:1, :32]

    def prefill(model: nn.Module) -> Callable[[], Any]:
        return lambda: model(input_ids=ids)

    def decode(model: nn.Module) -> Callable[[], Any]:
        return greedy_decoder(model, prompt, decode_steps)

    def with_k(k: int, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            set_routing(moefied_model, mode="router", top_k=k, dynamic_threshold=None)
            return fn()

        return run

    result: dict[str, float] = {}
    for phase, make, n_tok in (("prefill", prefill, batch * seq_len), ("decode", decode, decode_steps)):
        fns: dict[str, Callable[[], Any]] = {"dense": make(dense_model)}
        fns.update({f"K={k}": with_k(k, make(moefied_model)) for k in ks})
        med = interleaved_medians(fns, rounds, warmup=1)
        result[f"{phase}_dense_tok_s"] = n_tok / med["dense"]
        for k in ks:
            result[f"{phase}_K={k}_tok_s"] = n_tok / med[f"K={k}"]
            result[f"{phase}_K={k}_speedup"] = med["dense"] / med[f"K={k}"]
    return result


def greedy_decoder(model: nn.Module, prompt: Tensor, steps: int) -> Callable[[], None]:
    """A call that prefills ``prompt`` (1, T) and decodes ``steps`` greedy tokens with the KV cache.

    Args:
        model: a causal LM.
        prompt: (1, T) token ids.
        steps: one-token steps after the prompt.

    Returns:
        The call (no arguments, no result), for timing.
    """

    def run() -> None:
        out = model(input_ids=prompt, use_cache=True)
        past, nxt = output_cache(out), out.logits[:, -1:].argmax(-1)
        for _ in range(steps):
            out = model(input_ids=nxt, use_cache=True, **with_cache(past))
            past, nxt = output_cache(out), out.logits[:, -1:].argmax(-1)

    return run
