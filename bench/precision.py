"""Benchmark: the default model's prefill in fp32 and in bf16 weights (``precision: auto`` on bf16 CPUs).

Each side is one fresh process per round (bench/harness.py), the order rotating; a process loads
SmolLM2-135M-Instruct in its dtype (fp32, or bf16 as ``lmbricks.runtime.inference_dtype`` gives it),
runs one warm-up forward and then ``repeats`` timed forwards of ``batch`` x ``seq_len`` seeded
random tokens. Prints one JSON object: tokens/s of each side (medians over rounds, best of the
repeats in a round) and ``bf16_vs_fp32``, their ratio.

Usage: python bench/precision.py [--rounds 3] [--batch 4] [--seq-len 512] [--repeats 2]
       [--threads 1 --clock cpu]   (on a shared machine: CPU time of one thread)
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch


def prefill(dtype: str, batch: int, seq_len: int, repeats: int, threads: int | None, clock: str) -> dict[str, Any]:
    """Tokens/s of the default model's forward over (batch, seq_len) tokens in ``dtype``.

    ``clock="cpu"`` times by the process's CPU time (with ``threads=1``, a loaded machine's fair
    measure); ``"wall"`` by the wall clock.
    """
    from lmbricks.nn.load import load_model

    if threads:
        torch.set_num_threads(threads)
    now = time.process_time if clock == "cpu" else time.perf_counter

    model, _ = load_model("smollm2-135m-instruct", dtype=getattr(torch, dtype))
    ids = torch.randint(0, model.cfg.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(ids[:, :64])  # warm-up: kernels chosen, buffers grown
        seconds = []
        for _ in range(repeats):
            start = now()
            model(ids)  # (B, T, V) logits
            seconds.append(now() - start)
    best = min(seconds)
    return {"seconds": best, "tokens_per_s": batch * seq_len / best, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time")
    args = parser.parse_args()
    from lmbricks import tune_process

    tune_process()  # as every benchmark (the harness's children call it too)
    from harness import Workload, alternate, medians

    kwargs = {"batch": args.batch, "seq_len": args.seq_len, "repeats": args.repeats, "threads": args.threads,
              "clock": args.clock}  # fmt: skip
    runs = alternate(
        {side: Workload(__file__, "prefill", {"dtype": dtype, **kwargs}) for side, dtype in
         (("fp32", "float32"), ("bf16", "bfloat16"))},
        rounds=args.rounds,
    )  # fmt: skip
    rate = medians(runs, "tokens_per_s")
    print(json.dumps({
        "workload": f"default model prefill, {args.batch} x {args.seq_len} tokens",
        "tokens_per_s_fp32": rate["fp32"], "tokens_per_s_bf16": rate["bf16"],
        "bf16_vs_fp32": rate["bf16"] / rate["fp32"], "rounds": args.rounds, "clock": args.clock,
        "threads": args.threads, "runs": runs,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
