"""bench/moefy.py's timed workloads, each run by bench/harness.py in a fresh process.

The parent (bench/moefy.py) converts the model, saves it to a temporary directory with one
layer's dense and MoEfied FFN modules beside it (:data:`FFN_FILE`), and names these functions as
``Workload``s; each loads what it times from that directory and returns the median wall and
process-CPU seconds (``harness.time_calls``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.hub.threshold import FATReLU

FFN_FILE = "bench_ffn.pt"  # one layer's dense and MoEfied FFN modules, for the FFN workers
PREFILL, DECODE_STEPS = (4, 256), 16


def activation_threshold(ref: str | Path) -> float:
    """FATReLU's T of a model reference (config.json's ``lmbricks`` section; 0.0 for any other model)."""
    from lmbricks.hub import resolve_model
    from lmbricks.hub.threshold import activation_threshold as recorded

    return recorded(resolve_model(ref))


def set_threshold(model: torch.nn.Module, threshold: float) -> None:
    """Give every FFN of ``model`` (MoEfied FFNs, else the dense blocks) FATReLU with ``threshold`` (0: unchanged)."""
    from lmbricks.analysis import find_ffns
    from lmbricks.moefy import moefied_layers

    if threshold <= 0:
        return
    layers = moefied_layers(model)
    for layer in layers:
        layer.act = FATReLU(threshold)
    for block in [] if layers else find_ffns(model):
        block.module.act_fn = FATReLU(threshold)


def load_dense(ref: str | Path) -> tuple[Any, Any]:
    """``load_hf_model(ref)`` (which restores a ReLU-fied model's FATReLU threshold), fp32, eval."""
    from lmbricks.hub import load_hf_model

    model, tokenizer = load_hf_model(ref)
    set_threshold(model, activation_threshold(ref))
    return model, tokenizer


def active_params(config: Any, fraction: float) -> dict[str, int]:
    """Matmul parameters one token runs through with ``fraction`` of each FFN's experts active.

    Args:
        config: the Hugging Face config (Llama family).
        fraction: K / E (1.0: dense).

    Returns:
        ``{"matmul": attention + active FFN + head parameters, "weights": those plus the norms}``
        (the embedding lookup reads one row; with tied embeddings the head reads the matrix once).
    """
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h // config.num_attention_heads * config.num_key_value_heads
    per_layer = 2 * h * h + 2 * h * kv + round(3 * h * i * fraction)
    matmul = layers * per_layer + h * config.vocab_size
    return {"matmul": matmul, "weights": matmul + (2 * layers + 1) * h}


def save_ffn(directory: str | Path, dense: torch.nn.Module, moefied: torch.nn.Module, hidden: int) -> None:
    """Save one layer's dense FFN (a LlamaMLP) and its MoEfied FFN for :func:`ffn_case`.

    Args:
        directory: where (the MoEfied model's temporary directory).
        dense: the dense FFN (gate_proj, up_proj, down_proj).
        moefied: its :class:`~lmbricks.moefy.runtime.MoefiedFFN`, with a router.
        hidden: H.
    """
    torch.save({"dense": dense, "moefied": moefied, "hidden": hidden}, Path(directory) / FFN_FILE)


def ffn_case(arm: str, tokens: int, directory: str, reps: int, threads: int | None) -> dict[str, float]:
    """Time one FFN arm in this (fresh) process: ``dense``, ``dense_fused``, ``K=k`` or ``K=k+zs`` (router mode).

    Args:
        arm: the arm (``+zs``: zero-skipping on, else off; ``dense_fused`` takes the dense FFN's gate
            activation, SiLU or a ReLU-fied model's FATReLU).
        tokens: N, the rows of the (N, H) input (1 for decoding).
        directory: where the parent saved the layer's modules (:data:`FFN_FILE`).
        reps: timed calls (after two warm-up calls).
        threads: torch threads (None: torch's choice).

    Returns:
        ``{"seconds": median wall seconds of a call, "cpu_seconds": median process-CPU seconds}``.
    """
    from harness import time_calls

    from moe import FusedSwiGLU

    if threads:
        torch.set_num_threads(threads)
    saved = torch.load(Path(directory) / FFN_FILE, weights_only=False)  # written by this benchmark
    dense, moefied = saved["dense"].eval(), saved["moefied"].eval()
    x = torch.randn(tokens, saved["hidden"], generator=torch.Generator().manual_seed(0))  # (N, H)
    if arm == "dense":
        module: Any = dense
    elif arm == "dense_fused":
        module = FusedSwiGLU.of(dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight).eval()
        if not isinstance(dense.act_fn, torch.nn.SiLU):  # a ReLU-fied FFN: the same fused layout, its gate
            module.forward = _fused_forward(module, dense.act_fn)
    else:
        k, zero_skip = arm_k(arm)
        moefied.mode, moefied.top_k, moefied.dynamic_threshold = "router", k, None
        moefied.skip_zeros = zero_skip
        module = moefied
    with torch.no_grad():
        return time_calls(lambda: module(x), reps, warmup=2)


def arm_k(arm: str) -> tuple[int, bool]:
    """``"K=8"`` -> (8, False), ``"K=8+zs"`` -> (8, True): experts per token and zero-skipping."""
    k, _, zs = arm.split("=")[1].partition("+")
    return int(k), zs == "zs"


def _fused_forward(fused: Any, act: Any) -> Any:
    """bench/moe.py's fused gate_up forward with the gate activation ``act`` instead of SiLU."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        g, u = fused.gate_up(x).chunk(2, dim=-1)  # (N, I) each
        return fused.down(act(g) * u)  # (N, H)

    return forward


def model_case(arm: str, phase: str, directory: str, model: str, reps: int, threads: int | None) -> dict[str, float]:
    """Time the whole model in this (fresh) process: the dense model (``dense``) or the MoEfied one at ``K=k``.

    A ReLU-fied ``model`` runs with its FATReLU threshold, dense and MoEfied (:func:`set_threshold`).

    Args:
        arm: ``dense``, ``K=k`` or ``K=k+zs`` (zero-skipping on; off without ``+zs``).
        phase: ``prefill`` (one forward of :data:`PREFILL` random tokens) or ``decode``
            (:data:`DECODE_STEPS` cached one-token steps after a 32-token prompt, batch 1; the
            prompt's prefill untimed).
        directory: the saved MoEfied model.
        model: the dense model's reference.
        reps: timed repetitions (after one warm-up).
        threads: torch threads (None: torch's choice).

    Returns:
        ``{"seconds": median wall seconds, "cpu_seconds": median process-CPU seconds}`` of one
        repetition (a prefill, or all the decode steps).
    """
    import statistics

    from harness import time_calls

    from lmbricks.moefy import set_routing
    from lmbricks.moefy.io import load_moefied

    if threads:
        torch.set_num_threads(threads)
    if arm == "dense":
        net = load_dense(model)[0].eval()
    else:
        net = load_moefied(directory)[0]
        set_threshold(net, activation_threshold(model))
        k, zero_skip = arm_k(arm)
        set_routing(net, mode="router", top_k=k, dynamic_threshold=None, skip_zeros=zero_skip)
    ids = torch.randint(0, int(net.config.vocab_size), PREFILL, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if phase == "prefill":
            return time_calls(lambda: net(input_ids=ids), reps, warmup=1)
        runs = [_decode_once(net, ids[:1, :32]) for _ in range(reps + 1)]  # the first is the warm-up
    return {key: statistics.median(r[key] for r in runs[1:]) for key in ("seconds", "cpu_seconds")}


def _decode_once(net: Any, prompt: torch.Tensor) -> dict[str, float]:
    """Prefill ``prompt`` (1, T) untimed, then time :data:`DECODE_STEPS` greedy cached steps."""
    from harness import time_calls

    out = net(input_ids=prompt, use_cache=True)
    state = [out.past_key_values, out.logits[:, -1:].argmax(-1)]  # (cache, (1, 1) next token)

    def steps() -> None:
        for _ in range(DECODE_STEPS):
            o = net(input_ids=state[1], past_key_values=state[0], use_cache=True)
            state[:] = [o.past_key_values, o.logits[:, -1:].argmax(-1)]

    return time_calls(steps, 1, warmup=0)


def heal_case(directory: str, model: str, settings: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Heal the saved MoEfied model in this (fresh) process and measure its perplexity after.

    The teacher is ``model`` (a ReLU-fied one with its FATReLU threshold, the student too).

    Args:
        directory: the saved MoEfied model.
        model: the dense teacher's reference.
        settings: ``minutes``, ``lr``, ``k25``, ``k50``, ``eval_chunks``, ``eval_seq_len`` and
            optionally ``precision`` (``fp32``, the default, or ``bf16`` autocast).
        threads: torch threads (None: torch's choice).

    Returns:
        ``{"healing": {steps, tokens, minutes, tokens_per_minute, kl_first, kl_last_10_mean, lr_experts},
        "after": {"K": {domain: ppl}}, "dense_ppl": {domain: ppl}}``.
    """
    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.moefy import set_routing
    from lmbricks.moefy.evaluate import ppl_curve
    from lmbricks.moefy.heal import HealConfig, heal
    from lmbricks.moefy.io import load_moefied

    if threads:
        torch.set_num_threads(threads)
    dense, tokenizer = load_dense(model)
    student = load_moefied(directory)[0]
    set_threshold(student, activation_threshold(model))
    train = torch.cat(list(domain_chunks(tokenizer, DEFAULT_DOMAINS, "train", 16, 256).values()))
    train = train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))]
    set_routing(student, mode="router", top_k=settings["k50"])
    precision = settings.get("precision", "fp32")
    stats = heal(
        student, dense, train, HealConfig(max_minutes=settings["minutes"], lr=settings["lr"], precision=precision)
    )
    evals = domain_chunks(tokenizer, DEFAULT_DOMAINS, "test", settings["eval_chunks"], settings["eval_seq_len"])
    after = ppl_curve(student, evals, [settings["k25"], settings["k50"]], ("router",))
    minutes = stats.seconds / 60
    return {
        "healing": {
            "steps": stats.steps,
            "tokens": stats.tokens,
            "minutes": minutes,
            "tokens_per_minute": stats.tokens / minutes if minutes else None,
            "kl_first": stats.kl[0] if stats.kl else None,
            "kl_last_10_mean": sum(stats.kl[-10:]) / max(len(stats.kl[-10:]), 1) if stats.kl else None,
            "lr_experts": settings["lr"],
            "precision": precision,
        },
        "after": {str(p.top_k): p.ppl for p in after.points},
        "dense_ppl": after.dense_ppl,
    }
