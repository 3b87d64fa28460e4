"""The arms a training-free sparsity measurement compares: dense, GRIFFIN, CATS, CMoE or TEAL at a kept fraction.

An arm is a session on the model: inside ``with method.session(model, keep) as after_prompt``
the prompt runs (dense for GRIFFIN, thresholded for CATS), ``after_prompt()`` switches to what
decoding uses (GRIFFIN's restricted FFNs; nothing for CATS, whose kernel serves short inputs),
and leaving the block restores the dense model (TEAL, like CATS and CMoE, thresholds the whole
window: its masks in front of dense products for the prompt and the scored continuation, its
one-token kernel, :mod:`lmbricks.sparsify.teal_decode`, for each decoding step).
Quality (:func:`continuation_nll`) and speed (:func:`speed`, process CPU time) are measured through
the same sessions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbricks.moefy.cmoe import CMoELayer, cmoe_applied
from lmbricks.nn.model import LM, KVCache
from lmbricks.sparsify.cats import Cats
from lmbricks.sparsify.griffin import Griffin, ffn_sites
from lmbricks.sparsify.teal_decode import TealDecode, transposed_weights

MethodName = Literal["griffin", "cats", "cmoe", "teal"]


def arm_name(keep: float | None) -> str:
    """``dense`` or ``keep=<fraction>``, the key of an arm in the results."""
    return "dense" if keep is None else f"keep={keep:g}"


@dataclass
class Method:
    """A training-free method and what it was calibrated with.

    Attributes:
        name: "griffin" (per-prompt neuron selection), "cats" (thresholded gate activation),
            "cmoe" (carved experts, applied as a mask: quality only) or "teal" (thresholded inputs
            of every block's projections: masks for many tokens, the sparse kernel for one).
        thresholds: CATS: kept fraction -> per-FFN thresholds (for sparsity 1 - kept); TEAL: kept
            fraction -> the per-site thresholds of :func:`lmbricks.sparsify.teal.teal_sites`.
        carved: CMoE only: the carved FFNs and their routers.
        experts: CMoE only: experts per FFN, ``shared`` of them always on; a kept fraction f
            routes ``round(f * experts) - shared`` experts per token; ``oracle`` routes by the
            experts' true mass instead of the analytic router.
        transposed: TEAL only: the transposed projection weights its kernel reads, built at the
            first session and shared by every kept fraction.
    """

    name: MethodName
    thresholds: dict[float, list[float]] = field(default_factory=dict)
    carved: list[CMoELayer] = field(default_factory=list)
    experts: int = 0
    shared: int = 0
    oracle: bool = False
    transposed: list[Tensor] = field(default_factory=list)

    @property
    def timed(self) -> bool:
        """Whether decoding speed means something (CMoE here is a masked dense computation)."""
        return self.name != "cmoe"

    @contextmanager
    def session(self, model: nn.Module, keep: float | None) -> Iterator[Callable[[], None]]:
        """The arm ``keep`` (None: dense) on ``model``; yields what to call once the prompt has run."""
        if keep is None:
            yield lambda: None
        elif self.name == "griffin":
            with Griffin(model, keep) as g:

                def prune() -> None:
                    g.prune()

                yield prune
        elif self.name == "cats":
            with Cats(model, self.thresholds[keep]):
                yield lambda: None
        elif self.name == "teal":
            if not self.transposed:
                self.transposed = transposed_weights(model)
            with TealDecode(model, self.thresholds[keep], self.transposed):
                yield lambda: None
        else:
            with cmoe_applied(model, self.carved, round(keep * self.experts) - self.shared, self.oracle):
                yield lambda: None


def _forked(cache: KVCache) -> KVCache:
    """A cache that continues ``cache`` without changing it (its update concatenates into new tensors)."""
    out = KVCache(len(cache.keys))
    out.keys, out.values = list(cache.keys), list(cache.values)
    return out


def _nll(last: Tensor, logits: Tensor, cont: Tensor) -> float:
    """Summed NLL of ``cont`` (1, C): ``last`` (1, 1, V) predicts its first token, ``logits`` (1, C-1, V) the rest."""
    scores = torch.cat([last, logits], dim=1)[0]  # (C, V)
    return float(F.cross_entropy(scores.to(torch.promote_types(scores.dtype, torch.float32)), cont[0], reduction="sum"))


@torch.no_grad()
def continuation_nll(
    model: LM, window: Tensor, prompt_tokens: int, keeps: list[float], method: Method
) -> dict[str, float]:
    """Summed NLL of the window's continuation after its prompt, per arm.

    The dense arm and GRIFFIN's arms share one dense prompt (GRIFFIN runs the prompt dense); a
    CATS or CMoE arm runs the whole window through its method.

    Args:
        model: lmbricks' LM.
        window: (P + C,) token ids; the first ``prompt_tokens`` are the prompt.
        prompt_tokens: P.
        keeps: the kept fractions (the dense arm is always scored).
        method: GRIFFIN, CATS (with its thresholds) or CMoE (with its carving).

    Returns:
        arm -> sum over the C continuation tokens of -log p(token | everything before it).
    """
    prompt, cont = window[None, :prompt_tokens], window[None, prompt_tokens:]  # (1, P), (1, C)
    cache = KVCache(model.cfg.num_layers)
    out: dict[str, float] = {}
    with Griffin(model) as g:
        last = model(prompt, cache=cache).logits[:, -1:]  # (1, 1, V): predicts the first continuation token
        out["dense"] = _nll(last, model(cont[:, :-1], cache=_forked(cache)).logits, cont)
        for keep in keeps if method.name == "griffin" else []:
            g.prune(keep)
            out[arm_name(keep)] = _nll(last, model(cont[:, :-1], cache=_forked(cache)).logits, cont)
            g.restore()
    for keep in keeps if method.name != "griffin" else []:
        with method.session(model, keep) as after_prompt:
            cache = KVCache(model.cfg.num_layers)
            last = model(prompt, cache=cache).logits[:, -1:]
            after_prompt()
            out[arm_name(keep)] = _nll(last, model(cont[:, :-1], cache=cache).logits, cont)
    return out


@torch.no_grad()
def _decode_steps(
    model: LM, prompt: Tensor, steps: int, keep: float | None, method: Method
) -> tuple[list[float], float]:
    """CPU seconds of each greedy decoding step after ``prompt`` (1, P) in the arm, and of ``after_prompt``."""
    cache = KVCache(model.cfg.num_layers)
    times: list[float] = []
    with method.session(model, keep) as after_prompt:
        nxt = model(prompt, cache=cache).logits[:, -1:].argmax(-1)  # (1, 1)
        c = time.process_time()
        after_prompt()
        switch_s = time.process_time() - c
        for _ in range(steps):
            c = time.process_time()
            nxt = model(nxt, cache=cache).logits[:, -1:].argmax(-1)
            times.append(time.process_time() - c)
    return times, switch_s


@torch.no_grad()
def _ffn_step(model: LM, prompt: Tensor, keep: float | None, method: Method, calls: int) -> list[float]:
    """CPU seconds of the middle FFN, as the arm decodes with it, on single tokens of the prompt's FFN inputs."""
    site = ffn_sites(model)[len(ffn_sites(model)) // 2]
    captured: list[Tensor] = []
    with method.session(model, keep) as after_prompt:
        handle = getattr(site.parent, site.attr).register_forward_pre_hook(lambda _m, a: captured.append(a[0][0]))
        model(prompt)
        handle.remove()
        after_prompt()
        ffn: nn.Module = getattr(site.parent, site.attr)
        times = []
        for x in captured[0][:calls, None]:  # (1, H) each: one token at a time
            c = time.process_time()
            ffn(x)
            times.append(time.process_time() - c)
    return times


def speed(
    model: LM, prompt: Tensor, keeps: list[float], method: Method, steps: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Per arm, medians in process CPU time: decoding tokens/s of the whole model, one-token FFN
    milliseconds, and the milliseconds of the switch after the prompt (GRIFFIN's selection and restriction).

    Returns:
        ``{"decode_tok_s": {arm: v}, "ffn_decode_ms": {...}, "prune_ms": {...}}``; empty dicts when
        ``steps`` is 0 or the method is not timed (CMoE).
    """
    keys = ("decode_tok_s", "ffn_decode_ms", "prune_ms")
    if steps == 0 or not method.timed:
        return {k: {} for k in keys}
    arms: list[float | None] = [None, *keeps]
    times: dict[str, dict[str, list[float]]] = {k: {arm_name(a): [] for a in arms} for k in keys}
    for r in range(rounds):
        for keep in arms[r % len(arms) :] + arms[: r % len(arms)]:
            steps_s, switch_s = _decode_steps(model, prompt, steps, keep, method)
            times["decode_tok_s"][arm_name(keep)] += steps_s
            times["prune_ms"][arm_name(keep)].append(switch_s)
            times["ffn_decode_ms"][arm_name(keep)] += _ffn_step(model, prompt, keep, method, 4 * steps)
    med = {k: {a: statistics.median(t) for a, t in v.items()} for k, v in times.items()}
    return {
        "decode_tok_s": {a: 1.0 / max(1e-9, t) for a, t in med["decode_tok_s"].items()},
        "ffn_decode_ms": {a: 1e3 * t for a, t in med["ffn_decode_ms"].items()},
        "prune_ms": {a: 1e3 * t for a, t in med["prune_ms"].items()},
    }
