"""Benchmark: lmbricks MoELayer against transformers' Mixtral block and a dense FFN of equal FLOPs.

Same weights; each (module, phase) runs in its own fresh process per round (bench/harness.py: the
order rotates every round, every process tunes the allocator alike), medians. Layer: 8 experts,
top-2, hidden 512, expert intermediate 1792, 8 x 256 tokens. ``--precision auto`` (the default):
bf16 where the CPU multiplies bf16 natively (inference phases with bf16 weights and inputs,
forward + backward under bf16 autocast over fp32 weights), fp32 elsewhere.
Anchors: ``MixtralSparseMoeBlock`` with experts implementation ``grouped_mm`` and ``eager``,
the faster of the two per phase is the transformers anchor (``fwd_vs_hf``, ``fwdbwd_vs_hf``,
``decode_vs_hf``; the ``_hf_grouped`` keys stay, against ``grouped_mm`` alone); a dense SwiGLU
FFN with intermediate 3584 (the same active FLOPs): transformers' LlamaMLP (separate gate/up) and
a fused gate_up variant, the faster of the two per phase is the dense anchor (``*_anchors`` name
the winners).
Measures: forward (no grad), forward + backward (parameter and input gradients), and one decode
step of 8 tokens (no grad). Limits (bench/machine.py, measured at the start): ``fwd_mfu`` and
``fwdbwd_mfu`` against the GEMM rate of the run's precision (active FLOPs 2 T x 3 H I_dense
forward, three times that with backward), ``decode_vs_floor``: decode time over the time to read
the touched experts' weights at the measured bandwidth. ``--clock cpu`` times by each process's
CPU time (one thread on a loaded machine), the limits too. ``train_vs_hf`` and its keys come from
bench/train_lm.py (its rounds under ``train_rounds``, the layer's under ``layer_rounds`` and
``rounds``; its limits under ``train_machine_limits``; ``--no-train`` leaves it out; ``--phases`` times
a subset of the layer's phases). Prints one JSON object.

Usage: python bench/moe.py [--quick] [--rounds N] [--precision auto|bf16|fp32] [--threads N] [--clock wall|cpu]
       [--no-train] [--phases fwd fwdbwd decode]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E, K, H, I_EXPERT, I_DENSE = 8, 2, 512, 1792, 3584
BATCH, SEQ, DECODE_TOKENS = 8, 256, 8


class FusedSwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up in one (2I, H) matrix (lmbricks.nn's layout)."""

    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * inter, bias=False)
        self.down = nn.Linear(inter, hidden, bias=False)

    @classmethod
    def of(cls, gate: Tensor, up: Tensor, down: Tensor) -> FusedSwiGLU:
        """The fused FFN holding given (I, H) gate, (I, H) up and (H, I) down weights."""
        ffn = cls(gate.shape[1], gate.shape[0])
        with torch.no_grad():
            ffn.gate_up.weight.copy_(torch.cat([gate, up]))  # (2I, H)
            ffn.down.weight.copy_(down)
        return ffn

    def forward(self, x: Tensor) -> Tensor:
        g, u = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(g) * u)


def build(seed: int = 0) -> dict[str, nn.Module]:
    from transformers import LlamaConfig, MixtralConfig
    from transformers.models.llama.modeling_llama import LlamaMLP
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    from lmbricks.moe import MoEConfig, build_moe

    torch.manual_seed(seed)
    ours = build_moe(MoEConfig(hidden_size=H, intermediate_size=I_EXPERT, num_experts=E, top_k=K))
    with torch.no_grad():
        ours.router.gate.weight.normal_(0, 0.02)
    hf_weights = ours.experts.to_hf()
    blocks: dict[str, nn.Module] = {}
    for impl in ("grouped_mm", "eager"):
        cfg = MixtralConfig(hidden_size=H, intermediate_size=I_EXPERT, num_local_experts=E, num_experts_per_tok=K)
        cfg._experts_implementation = impl
        blk = MixtralSparseMoeBlock(cfg)
        with torch.no_grad():
            blk.gate.weight.copy_(ours.router.gate.weight)
            blk.experts.gate_up_proj.copy_(hf_weights["gate_up_proj"])
            blk.experts.down_proj.copy_(hf_weights["down_proj"])
        blocks[f"hf_{impl}"] = blk
    dense = LlamaMLP(LlamaConfig(hidden_size=H, intermediate_size=I_DENSE, hidden_act="silu"))
    fused = FusedSwiGLU(H, I_DENSE)
    for m in (dense, fused):
        for p in m.parameters():
            nn.init.normal_(p, std=0.02)
    return {"ours": ours, **blocks, "dense": dense, "dense_fused": fused}


def _out(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    y = module(x)
    if isinstance(y, tuple):  # MoELayer: (y, aux); in training the aux losses are part of its cost
        y, aux = y
        if aux.losses:
            return y, 0.01 * aux.losses["switch"] + 0.001 * aux.losses["z"]
    return y, None


def step_fwd(module: nn.Module, x: Tensor) -> None:
    module.eval()  # inference: no grad, eval mode
    with torch.no_grad():
        _out(module, x)


def step_fwdbwd(module: nn.Module, x: Tensor, g: Tensor) -> None:
    module.train()
    for p in module.parameters():
        p.grad = None
    xg = x.detach().requires_grad_()
    y, aux = _out(module, xg)
    loss = (y * g).sum()  # a dense upstream gradient, as from the next layer
    if aux is not None:
        loss = loss + aux
    loss.backward()


def check_agreement(models: dict[str, nn.Module], x: Tensor) -> float:
    """Max |ours - HF grouped_mm| on the benchmark input (same weights, so ~1e-6)."""
    with torch.no_grad():
        a, _ = _out(models["ours"], x)
        b, _ = _out(models["hf_grouped_mm"], x)
    return float((a - b).abs().max())


def layer_case(name: str, phase: str, precision: str, reps: int, threads: int | None) -> dict[str, Any]:
    """Time one module in one phase, in this (fresh) process: the median of ``reps`` calls.

    Args:
        name: ``"ours"``, ``"hf_grouped_mm"``, ``"hf_eager"``, ``"dense"`` or ``"dense_fused"``.
        phase: ``"fwd"`` (no grad), ``"fwdbwd"`` (parameter and input gradients) or ``"decode"``
            (one step of ``DECODE_TOKENS`` tokens, no grad).
        precision: ``"bf16"`` (inference phases: bf16 weights and inputs; fwd+bwd: bf16 autocast over
            fp32 weights) or ``"fp32"``.
        reps: timed calls after two warm-up calls (five for decode).
        threads: torch threads (None: torch's choice).

    Returns:
        ``{"ms": median wall milliseconds, "cpu_ms": median process-CPU milliseconds,
        "touched_experts": experts the decode tokens route to}``.
    """
    from harness import time_calls

    from lmbricks.runtime import autocast

    if threads:
        torch.set_num_threads(threads)
    models = build()
    module = models[name]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, SEQ, H, generator=gen)
    g = torch.randn(BATCH, SEQ, H, generator=gen)
    xd = torch.randn(DECODE_TOKENS, 1, H, generator=gen)
    logits = xd.reshape(-1, H) @ models["ours"].router.gate.weight.T  # (tokens, E): top-k of softmax = of logits
    touched = int(logits.topk(K, dim=-1).indices.unique().numel())
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if phase == "fwdbwd":
        with autocast("bf16" if precision == "bf16" else "fp32", "cpu"):
            timed = time_calls(lambda: step_fwdbwd(module, x, g), reps, warmup=2)
    else:
        module = module.to(dtype)
        inp = (x if phase == "fwd" else xd).to(dtype)
        timed = time_calls(lambda: step_fwd(module, inp), reps, warmup=2 if phase == "fwd" else 5)
    return {"ms": 1e3 * timed["seconds"], "cpu_ms": 1e3 * timed["cpu_seconds"], "touched_experts": touched}


PHASES = ("fwd", "fwdbwd", "decode")
MODULES = ("ours", "hf_grouped_mm", "hf_eager", "dense", "dense_fused")


def bench_layer(
    quick: bool,
    rounds: int | None,
    precision: str,
    machine: dict[str, Any],
    threads: int | None,
    clock: str = "wall",
    phases: tuple[str, ...] = PHASES,
) -> dict[str, Any]:
    """Each (module, phase) in its own fresh process per round (bench/harness.py), medians.

    Args:
        quick: fewer calls per process.
        rounds: processes per (module, phase) (default 3, quick 2).
        precision: ``"bf16"`` or ``"fp32"``, resolved.
        machine: bench/machine.py's limits, measured by ``clock``.
        threads: torch threads in the workers (None: torch's choice).
        clock: ``"wall"`` or ``"cpu"`` (the process's CPU time; one thread on a loaded machine).
        phases: a subset of :data:`PHASES` (the reproducibility test times one).

    Returns:
        The layer's keys: ratios against the dense anchor (the faster of LlamaMLP and the fused
        variant) and against transformers (the faster of ``grouped_mm`` and ``eager``, plus the
        ``_hf_grouped`` keys against ``grouped_mm`` alone), utilisation, the medians.
    """
    from harness import Workload, alternate, medians

    n_rounds = rounds or (2 if quick else 3)
    reps = {"fwd": 3 if quick else 10, "fwdbwd": 3 if quick else 10, "decode": 20 if quick else 80}
    reps = {p: n for p, n in reps.items() if p in phases}
    key = {"wall": "ms", "cpu": "cpu_ms"}[clock]
    med: dict[str, dict[str, float]] = {}
    touched = 0
    for phase, n in reps.items():
        args = {"phase": phase, "precision": precision, "reps": n, "threads": threads}
        runs = alternate({m: Workload(__file__, "layer_case", {**args, "name": m}) for m in MODULES}, n_rounds)
        med[phase] = medians(runs, key)
        touched = runs["ours"][0]["touched_experts"]

    out = anchor_ratios(med) | _utilisation(med, touched, precision, machine)
    layer_rounds = {"processes_per_case": n_rounds, "calls_per_process": reps}
    return out | {
        "median_ms": {p: {n: round(v, 3) for n, v in d.items()} for p, d in med.items()},
        "clock": clock,
        "layer_rounds": layer_rounds,
        "rounds": layer_rounds,  # the old key: the layer's rounds (the training benchmark's are train_rounds)
    }


def anchor_ratios(med: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Ours over each anchor, per phase: like with like, the faster implementation of each side.

    Args:
        med: ``{phase: {module: median ms}}`` over :data:`MODULES`.

    Returns:
        ``{phase}_vs_dense`` (the faster of LlamaMLP and the fused FFN), ``{phase}_vs_hf`` (the
        faster of transformers' ``grouped_mm`` and ``eager``), ``{phase}_vs_hf_grouped``
        (``grouped_mm`` alone, the old key) and ``{phase}_anchors`` naming the winners.
    """
    out: dict[str, Any] = {}
    for phase, ms in med.items():
        dense = min(("dense", "dense_fused"), key=lambda m: ms[m])
        hf = min(("hf_grouped_mm", "hf_eager"), key=lambda m: ms[m])
        out |= {
            f"{phase}_vs_dense": ms["ours"] / ms[dense],
            f"{phase}_vs_hf": ms["ours"] / ms[hf],
            f"{phase}_vs_hf_grouped": ms["ours"] / ms["hf_grouped_mm"],
            f"{phase}_anchors": {"dense": dense, "hf": hf},
        }
    return out


def _utilisation(
    med: dict[str, dict[str, float]], touched: int, precision: str, machine: dict[str, Any]
) -> dict[str, Any]:
    """MFU of the timed phases against the GEMM rate, decode against the touched experts' bandwidth floor."""

    def dense_ms(phase: str) -> float:
        return min(med[phase]["dense"], med[phase]["dense_fused"])

    out: dict[str, Any] = {}
    peak = machine[f"gemm_gflops_{precision}"] * 1e9
    fwd_flops = 2 * BATCH * SEQ * 3 * H * I_DENSE  # the active FLOPs of the layer (= the dense FFN's)
    if "fwd" in med:
        out["fwd_mfu"] = fwd_flops / (med["fwd"]["ours"] / 1e3) / peak
    if "fwdbwd" in med:
        out |= {
            "fwdbwd_mfu": 3 * fwd_flops / (med["fwdbwd"]["ours"] / 1e3) / peak,
            "hf_grouped_fwdbwd_vs_dense": med["fwdbwd"]["hf_grouped_mm"] / dense_ms("fwdbwd"),
            "hf_eager_fwdbwd_vs_dense": med["fwdbwd"]["hf_eager"] / dense_ms("fwdbwd"),
        }
    if "decode" in med:
        # the decode floor: reading the touched experts' weights (gate, up, down) and the router once
        width = 2 if precision == "bf16" else 4
        floor_bytes = (touched * 3 * H * I_EXPERT + E * H) * width
        floor_ms = floor_bytes / (machine["bandwidth_gbs"] * 1e9) * 1e3
        out |= {
            "decode_vs_floor": med["decode"]["ours"] / floor_ms,
            "hf_decode_vs_floor": min(med["decode"]["hf_grouped_mm"], med["decode"]["hf_eager"]) / floor_ms,
            "decode_bandwidth_share": floor_ms / med["decode"]["ours"],
            "decode_floor": {"touched_experts": touched, "bytes": floor_bytes, "ms": round(floor_ms, 4)},
        }
    return out


def bench_train(quick: bool, precision: str, threads: int | None, clock: str = "wall") -> dict[str, Any]:
    """Training-step tokens/s of the reference LM versus ``LlamaForCausalLM`` (``train_vs_hf``).

    The measurement lives in ``bench/train_lm.py`` (one script per claim); this merges its keys.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_lm", Path(__file__).with_name("train_lm.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.train_vs_hf(quick=quick, precision=precision, device="cpu", threads=threads, clock=clock))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from machine import measure_machine

    import lmbricks
    from lmbricks.runtime import resolve_precision

    lmbricks.tune_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (a smoke run, noisy ratios)")
    ap.add_argument("--rounds", type=int, default=None, help="fresh processes per case and phase (default 3)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: for a loaded machine, 1 thread")
    ap.add_argument("--no-train", action="store_true", help="the layer only (no bench/train_lm.py comparison)")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES, help="the layer's phases to time")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, "cpu")
    torch.manual_seed(0)
    shapes = [(BATCH * SEQ, H, 2 * I_DENSE), (BATCH * SEQ * K // E, H, 2 * I_EXPERT)]
    machine = measure_machine(shapes, clock=args.clock)
    result: dict[str, Any] = {
        "bench": "moe_layer",
        "precision": precision,
        "config": {
            "experts": E,
            "top_k": K,
            "hidden": H,
            "expert_intermediate": I_EXPERT,
            "dense_intermediate": I_DENSE,
            "tokens": BATCH * SEQ,
            "decode_tokens": DECODE_TOKENS,
            "dtype": "bfloat16" if precision == "bf16" else "float32",
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "machine_limits": machine,
    }
    models = build()
    result["max_abs_diff_vs_hf"] = check_agreement(models, torch.randn(BATCH, SEQ, H))
    del models
    result.update(
        bench_layer(args.quick, args.rounds, precision, machine, args.threads, args.clock, tuple(args.phases))
    )
    if not args.no_train:
        result = merge_train(result, bench_train(args.quick, args.precision, args.threads, args.clock))
    print(json.dumps(result, indent=1))
    return result


def merge_train(result: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """The layer's result with bench/train_lm.py's keys, none of the layer's overwritten.

    The training benchmark's ``rounds``, ``machine_limits`` and ``clock`` become ``train_rounds``,
    ``train_machine_limits`` and ``train_clock`` (the layer's stay under ``rounds`` /
    ``layer_rounds``, ``machine_limits`` and ``clock``); its ``precision`` is the run's, already there.
    """
    renamed = {"rounds": "train_rounds", "machine_limits": "train_machine_limits", "clock": "train_clock"}
    train = {renamed.get(k, k): v for k, v in train.items() if k != "precision"}
    clash = sorted(set(train) & set(result))
    if clash:
        raise KeyError(f"bench/train_lm.py's keys {clash} would overwrite the layer's")
    return result | train


if __name__ == "__main__":
    main()
