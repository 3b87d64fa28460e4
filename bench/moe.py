"""Benchmark: lmbricks MoELayer against transformers' Mixtral block and a dense FFN of equal FLOPs.

One process, same weights, round-robin after warm-up (the order rotates every round), medians.
Layer: 8 experts, top-2, hidden 512, expert intermediate 1792, 8 x 256 tokens, fp32.
Anchors: ``MixtralSparseMoeBlock`` with experts implementation ``grouped_mm`` and ``eager``;
a dense SwiGLU FFN with intermediate 3584 (the same active FLOPs): transformers' LlamaMLP
(separate gate/up) and a fused gate_up variant; the faster of the two is the dense anchor.
Measures: forward (no grad), forward + backward (parameter and input gradients), and one decode
step of 8 tokens (no grad). Prints one JSON object.

Usage: python bench/moe.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
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


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def run_round_robin(cases: dict[str, Callable[[], None]], rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    names = list(cases)
    for _ in range(warmup):
        for n in names:
            cases[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for n in order:
            times[n].append(timed(cases[n]))
    return times


def check_agreement(models: dict[str, nn.Module], x: Tensor) -> float:
    """Max |ours - HF grouped_mm| on the benchmark input (same weights, so ~1e-6)."""
    with torch.no_grad():
        a, _ = _out(models["ours"], x)
        b, _ = _out(models["hf_grouped_mm"], x)
    return float((a - b).abs().max())


def bench_layer(quick: bool, rounds: int | None) -> dict[str, Any]:
    models = build()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, SEQ, H, generator=gen)
    g = torch.randn(BATCH, SEQ, H, generator=gen)
    xd = torch.randn(DECODE_TOKENS, 1, H, generator=gen)
    n_train = rounds or (5 if quick else 25)
    n_decode = 8 * n_train
    names = ["ours", "hf_grouped_mm", "hf_eager", "dense", "dense_fused"]

    fwd = run_round_robin({n: (lambda m=models[n]: step_fwd(m, x)) for n in names}, n_train)
    fwdbwd = run_round_robin({n: (lambda m=models[n]: step_fwdbwd(m, x, g)) for n in names}, n_train)
    decode = run_round_robin({n: (lambda m=models[n]: step_fwd(m, xd)) for n in names}, n_decode, warmup=5)

    med = {
        phase: {n: statistics.median(v) for n, v in t.items()}
        for phase, t in (("fwd", fwd), ("fwdbwd", fwdbwd), ("decode", decode))
    }

    def dense_anchor(phase: str) -> float:
        return min(med[phase]["dense"], med[phase]["dense_fused"])

    out: dict[str, Any] = {
        "fwd_vs_dense": med["fwd"]["ours"] / dense_anchor("fwd"),
        "fwdbwd_vs_dense": med["fwdbwd"]["ours"] / dense_anchor("fwdbwd"),
        "decode_vs_hf_grouped": med["decode"]["ours"] / med["decode"]["hf_grouped_mm"],
        "fwdbwd_vs_hf_grouped": med["fwdbwd"]["ours"] / med["fwdbwd"]["hf_grouped_mm"],
        "fwd_vs_hf_grouped": med["fwd"]["ours"] / med["fwd"]["hf_grouped_mm"],
        "decode_vs_dense": med["decode"]["ours"] / dense_anchor("decode"),
        "hf_grouped_fwdbwd_vs_dense": med["fwdbwd"]["hf_grouped_mm"] / dense_anchor("fwdbwd"),
        "hf_eager_fwdbwd_vs_dense": med["fwdbwd"]["hf_eager"] / dense_anchor("fwdbwd"),
        "median_ms": {p: {n: round(v, 3) for n, v in d.items()} for p, d in med.items()},
        "rounds": {"fwd": n_train, "fwdbwd": n_train, "decode": n_decode},
        "max_abs_diff_vs_hf": check_agreement(models, x),
    }
    return out


def bench_train(quick: bool) -> dict[str, Any]:
    """Training-step tokens/s of the reference LM versus ``LlamaForCausalLM`` (``train_vs_hf``).

    The measurement lives in ``bench/train_lm.py`` (one script per claim); this merges its keys.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_lm", Path(__file__).with_name("train_lm.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.train_vs_hf(quick=quick))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (a smoke run, noisy ratios)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds for fwd and fwd+bwd")
    args = ap.parse_args()
    torch.manual_seed(0)
    result: dict[str, Any] = {
        "bench": "moe_layer",
        "config": {
            "experts": E,
            "top_k": K,
            "hidden": H,
            "expert_intermediate": I_EXPERT,
            "dense_intermediate": I_DENSE,
            "tokens": BATCH * SEQ,
            "decode_tokens": DECODE_TOKENS,
            "dtype": "float32",
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    result.update(bench_layer(args.quick, args.rounds))
    result.update(bench_train(args.quick))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
