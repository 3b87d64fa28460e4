"""Benchmark: one InfLLM prefill chunk's attention call and one layer's projections, by dtype and mask.

The shapes are the default model's once the window is full (9 query heads over 3 key/value heads
of 64; 512 queries; 6,912 keys: 128 sinks, 16 blocks of 128, the 4,096-token window and the chunk).
Attention variants: bf16 with a boolean mask (InfLLM's call before 2026-12-07), fp32 with a
boolean mask, fp32 with an additive mask (the call now), and fp32 without a mask (a lower bound,
not a correct attention). Projections: one layer's q/k/v, o, gate/up and down products on 512
tokens, with bf16 and with fp32 weights. Every variant is timed in each round, the order rotating,
by this process's CPU time with one thread; the JSON gives each variant's median over rounds in ms.

Usage: OMP_NUM_THREADS=1 python bench/memory_attention.py [--rounds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import lmbricks

NH, NKV, C, HD, GLOBAL, WINDOW, HIDDEN, FFN = 9, 3, 512, 64, 128 + 16 * 128, 4096, 576, 1536


def _cpu_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - start) / repeats * 1000


def variants() -> dict[str, Callable[[], object]]:
    """Each variant as a call on seeded random tensors of the chunk's shapes."""
    g = torch.Generator().manual_seed(0)
    n = GLOBAL + WINDOW + C
    q, k, v = (torch.randn(1, h, t, HD, generator=g) for h, t in ((NH, C), (NKV, n), (NKV, n)))
    pos, lpos = torch.arange(C), torch.arange(WINDOW + C) - WINDOW
    causal = lpos[None] > pos[:, None]  # (C, window + C): True where a key is after the query
    boolean = torch.cat([torch.ones(C, GLOBAL, dtype=torch.bool), ~causal], dim=1)
    additive = torch.zeros(C, n)
    additive[:, GLOBAL:].masked_fill_(causal, float("-inf"))
    bq, bk, bv = q.bfloat16(), k.bfloat16(), v.bfloat16()
    shapes = [(HIDDEN, (NH + 2 * NKV) * HD), (NH * HD, HIDDEN), (HIDDEN, 2 * FFN), (FFN, HIDDEN)]
    pairs = [(torch.randn(C, i, generator=g), torch.randn(i, o, generator=g) * 0.02) for i, o in shapes]

    def layer(dtype: torch.dtype) -> Callable[[], object]:
        cast = [(x.to(dtype), w.to(dtype)) for x, w in pairs]  # (C, in) @ (in, out)
        return lambda: [x @ w for x, w in cast]

    sdpa = F.scaled_dot_product_attention
    return {
        "attention_bf16_bool_mask": lambda: sdpa(bq, bk, bv, attn_mask=boolean, enable_gqa=True),
        "attention_fp32_bool_mask": lambda: sdpa(q, k, v, attn_mask=boolean, enable_gqa=True),
        "attention_fp32_additive_mask": lambda: sdpa(q, k, v, attn_mask=additive, enable_gqa=True),
        "attention_fp32_no_mask": lambda: sdpa(q, k, v, enable_gqa=True),
        "projections_bf16": layer(torch.bfloat16),
        "projections_fp32": layer(torch.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lmbricks.tune_process()
    torch.set_num_threads(1)
    calls = variants()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_cpu_ms(calls[name], args.repeats))
    ms = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "command": "OMP_NUM_THREADS=1 python bench/memory_attention.py "
        f"--rounds {args.rounds} --repeats {args.repeats}",
        "clock": "process CPU time, one thread", "load_avg_1min": os.getloadavg()[0],
        "ms_median": ms, "ms_rounds": times,
        "fp32_additive_vs_bf16_bool": ms["attention_fp32_additive_mask"] / ms["attention_bf16_bool_mask"],
        "projections_fp32_vs_bf16": ms["projections_fp32"] / ms["projections_bf16"],
    }  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
