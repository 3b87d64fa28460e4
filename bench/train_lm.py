"""Benchmark ``train_vs_hf``: training-step tokens/s of lmbricks.nn.LM versus transformers' Llama.

Same configuration and the same weights (HF weights loaded into the reference LM); one training
step = forward, next-token cross-entropy, backward, AdamW step. Each side runs in its own fresh
process per round (bench/harness.py), the order rotating every round, both with the same allocator
setting (``lmbricks.tune_process()``) and precision; medians over the rounds. The same alternation
with the C library's default allocator (``LMBRICKS_TUNE_ALLOCATOR=0``) gives
``train_vs_hf_default_alloc``. ``--precision auto`` (the default) is bf16 autocast (fp32 master
weights and AdamW state) where the device multiplies bf16 natively, fp32 elsewhere. Model: hidden
512, 4 layers, 8 heads (4 KV), SwiGLU 1376, vocab 8192, batch 8 x 256 tokens (``--quick``: hidden
128, 2 layers, batch 4 x 128).

Utilisation: the machine's GEMM rate in the run's precision (bench/machine.py, measured at this
model's shapes at the start, by the same clock as the steps: ``--clock``) against the model FLOPs
of a step, 6 N T for the N matmul parameters (embedding lookup excluded, head included) and T
tokens, plus attention's 12 L d S T (PaLM's count, non-causal: the causal kernels do about half of
it): ``train_mfu`` (lmbricks), ``hf_train_mfu``.

Prints one JSON object: {"train_vs_hf": ratio (> 1 means lmbricks is faster), "train_mfu", ...}.
``bench/moe.py`` may import :func:`train_vs_hf` and merge its result.

On a machine shared with other work, ``--threads 1 --clock cpu`` times each step by the process's
own CPU time (page faults included), which the other processes hardly change.

Usage: python bench/train_lm.py [--quick] [--rounds N] [--precision auto|bf16|fp32] [--preload LIB]
       [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
from collections.abc import Callable
from typing import Any

import torch

SIDES = ("lmbricks", "hf")


def _configs(quick: bool) -> tuple[dict[str, int], int, int]:
    if quick:
        return (
            dict(
                vocab_size=4096,
                hidden_size=128,
                intermediate_size=352,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            ),
            4,
            128,
        )
    return (
        dict(
            vocab_size=8192,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=4,
        ),
        8,
        256,
    )


def step_flops(shape: dict[str, int], batch: int, seq: int) -> dict[str, int]:
    """Model FLOPs of one training step: 6 N T for the matmul parameters, plus attention's 12 L d S T.

    Args:
        shape: the Llama sizes (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
            num_attention_heads, num_key_value_heads).
        batch: sequences per step.
        seq: tokens per sequence.

    Returns:
        ``{"matmul": 6 N T, "attention": 12 L d S T, "total": their sum, "matmul_params": N}``.
    """
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i  # q, o; k, v; gate, up, down
    n = layers * per_layer + h * shape["vocab_size"]  # + the untied head
    tokens = batch * seq
    matmul, attention = 6 * n * tokens, 12 * layers * h * seq * tokens
    return {"matmul": matmul, "attention": attention, "total": matmul + attention, "matmul_params": n}


def build_step(side: str, quick: bool, precision: str, device: str) -> Callable[[], None]:
    """One side's model, data and optimizer; returns the training step (bench/profile.py uses it too).

    Args:
        side: ``"lmbricks"`` or ``"hf"``.
        quick: the small model.
        precision: ``"bf16"`` (autocast, fp32 master weights) or ``"fp32"``, already resolved.
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        A closure running forward, next-token cross-entropy, backward and an AdamW step.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmbricks.nn import LM, config_from_hf, hf_state_dict, load_hf_weights
    from lmbricks.runtime import autocast

    dev = torch.device(device)
    shape, batch, seq = _configs(quick)
    torch.manual_seed(0)
    hf_cfg = LlamaConfig(**shape, max_position_embeddings=seq, tie_word_embeddings=False)
    hf_cfg._attn_implementation = "sdpa"
    hf = LlamaForCausalLM(hf_cfg)
    ids = torch.randint(0, shape["vocab_size"], (batch, seq)).to(dev)  # (B, S)
    if side == "lmbricks":
        ours = LM(config_from_hf(hf_cfg.to_dict()))
        sd = hf.state_dict()
        load_hf_weights(ours, sd.__getitem__, set(sd), "llama")
        assert set(hf_state_dict(ours, "llama")) == set(sd)  # the same parameters, fused differently
        model: torch.nn.Module = ours.to(dev).train()
        del hf

        def loss_of() -> torch.Tensor:
            return ours.loss(ids).loss  # the training API, as labels= is transformers' (fused head + loss)
    else:
        model = hf.to(dev).train()

        def loss_of() -> torch.Tensor:
            return hf(input_ids=ids, labels=ids).loss

    # One optimizer for both sides: the fused kernel in bf16, as lmbricks' trainer
    # (train/setup.py: fused_adamw) and transformers' Trainer (adamw_torch_fused, torch >= 2.8) take it.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if precision == "bf16" else None)

    def step() -> None:
        with autocast("bf16" if precision == "bf16" else "fp32", dev):
            loss = loss_of()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def train_step(side: str, quick: bool, precision: str, device: str, steps: int, threads: int | None) -> dict[str, Any]:
    """Time ``steps`` training steps of one side in this process (after two warm-up steps).

    Args:
        side: ``"lmbricks"`` or ``"hf"``.
        quick: the small model.
        precision: ``"bf16"`` (autocast, fp32 master weights) or ``"fp32"``, already resolved.
        device: ``"cpu"`` or ``"cuda"``.
        steps: timed steps.
        threads: torch threads (None: torch's choice).

    Returns:
        ``{"seconds": median wall time of a step, "cpu_seconds": median process CPU time (user +
        system, page faults included) of a step, "faults_per_step": minor page faults per step}``.
    """
    from harness import time_calls

    if threads:
        torch.set_num_threads(threads)
    step = build_step(side, quick, precision, device)
    for _ in range(2):  # warm-up, outside the fault count
        step()
    sync = torch.cuda.synchronize if device == "cuda" else None
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    timed = time_calls(step, steps, warmup=0, sync=sync)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    return {**timed, "faults_per_step": round(faults / steps)}


def train_vs_hf(
    quick: bool = False,
    rounds: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    default_alloc_rounds: int | None = None,
    preload: str | None = None,
    threads: int | None = None,
    clock: str = "wall",
) -> dict[str, Any]:
    """Measure tokens/s of one training step for both sides, each round in fresh processes.

    Args:
        quick: the small model (smoke and reproducibility tests).
        rounds: processes per side with the tuned allocator (default 5, quick 3).
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"`` (see lmbricks.runtime.resolve_precision).
        default_alloc_rounds: processes per side with the default allocator (default 3, quick 1; 0 skips).
        preload: an allocator library given to both sides by ``LD_PRELOAD`` (jemalloc, tcmalloc).
        threads: torch threads in the workers (None: torch's choice).
        clock: ``"wall"`` (the default) or ``"cpu"``: the process's CPU time per step, which other
            processes on the same cores hardly change; meaningful with ``threads=1`` (with more,
            idle threads' spinning counts too). The machine's limits are measured by the same clock.

    Returns:
        The JSON-able result (``train_vs_hf``, ``train_mfu``, ``precision``, ``train_vs_hf_default_alloc``...).
    """
    from harness import CLOCKS, Workload, alternate, medians
    from machine import measure_machine

    from lmbricks.runtime import resolve_precision

    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    prec = resolve_precision(precision, dev)
    shape, batch, seq = _configs(quick)
    rounds = rounds or (3 if quick else 5)
    default_rounds = (1 if quick else 3) if default_alloc_rounds is None else default_alloc_rounds
    h, i, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    if threads:
        torch.set_num_threads(threads)
    machine = measure_machine([(batch * seq, h, 2 * i), (batch * seq, h, v)], dev, 0.2 if quick else 0.5, clock)
    steps = 10 if quick else 3
    args = dict(quick=quick, precision=prec, device=dev, steps=steps, threads=threads)
    env = {"LD_PRELOAD": preload} if preload else {}
    tuned = alternate({s: Workload(__file__, "train_step", {**args, "side": s}, env) for s in SIDES}, rounds)
    key = CLOCKS[clock]
    med = medians(tuned, key)
    tokens = batch * seq
    flops = step_flops(shape, batch, seq)
    peak = machine[f"gemm_gflops_{prec}"] * 1e9
    out: dict[str, Any] = {
        "train_vs_hf": round(med["hf"] / med["lmbricks"], 3),
        "train_mfu": round(flops["total"] / med["lmbricks"] / peak, 4),
        "hf_train_mfu": round(flops["total"] / med["hf"] / peak, 4),
        "precision": prec,
        "lmbricks_tokens_per_s": round(tokens / med["lmbricks"], 1),
        "hf_tokens_per_s": round(tokens / med["hf"], 1),
        "faults_per_step": {s: statistics.median(r["faults_per_step"] for r in tuned[s]) for s in SIDES},
        "allocator": tuned["lmbricks"][0]["allocator"] | ({"preload": preload} if preload else {}),
    }
    if default_rounds:
        off = {**env, "LMBRICKS_TUNE_ALLOCATOR": "0"}
        default = alternate(
            {s: Workload(__file__, "train_step", {**args, "side": s}, off) for s in SIDES}, default_rounds
        )
        dmed = medians(default, key)
        out |= {
            "train_vs_hf_default_alloc": round(dmed["hf"] / dmed["lmbricks"], 3),
            "default_alloc_tokens_per_s": {s: round(tokens / dmed[s], 1) for s in SIDES},
            "default_alloc_faults_per_step": {
                s: statistics.median(r["faults_per_step"] for r in default[s]) for s in SIDES
            },
        }
    return out | {
        "flops_per_step": flops,
        "flops_note": "6 N T (N: matmul parameters, head included, embedding excluded) + 12 L d S T attention "
        "(PaLM, non-causal); MFU against the measured GEMM rate of the run's precision, both timed by "
        "the run's clock",
        "machine_limits": machine,
        "model": shape,
        "batch": [batch, seq],
        "rounds": {"tuned": rounds, "default_alloc": default_rounds, "steps_per_process": steps},
        "device": torch.cuda.get_device_name(dev) if dev == "cuda" else platform.processor() or "cpu",
        "dtype": "bf16 autocast" if prec == "bf16" else "fp32",
        "clock": clock,
        "threads": threads or torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small model, for smoke and reproducibility tests")
    parser.add_argument("--rounds", type=int, default=None, help="fresh processes per side (default 5, quick 3)")
    parser.add_argument("--default-alloc-rounds", type=int, default=None, help="the same without tuning (0 skips)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--preload", default=None, help="an allocator library for both sides (LD_PRELOAD)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: for a loaded machine, 1 thread")
    args = parser.parse_args(argv)
    result = train_vs_hf(
        args.quick,
        args.rounds,
        args.device,
        args.precision,
        args.default_alloc_rounds,
        args.preload,
        args.threads,
        args.clock,
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
