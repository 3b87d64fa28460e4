"""Parallel efficiency of an RL step's two kinds of work, 1 thread against 2, on a small case of the default model.

A loaded shared machine makes wall time meaningless, so each part is timed by three clocks, in one
process, the thread counts alternating over ``--repeats`` rounds:

- ``cpu_s``: the process's CPU time (all threads; OpenMP's waiting threads spin, so it counts them);
- ``main_thread_s``: the calling thread's CPU time (``time.thread_time``). With 2 threads the main thread
  computes its share and waits for the other at each barrier, so on a quiet machine this is about the
  wall time; on a loaded one an estimate (it also spins, up to libgomp's spin limit, while its partner
  is descheduled);
- ``wall_s``: for the record only.

Parts: ``update`` is one micro-batch of the RL update (``token_logprobs`` of the LoRA policy under bf16
autocast with recompute, a policy-gradient backward: ``--rows`` rows of prompt + ``--tokens`` response
tokens); ``sampling`` is ``sample_responses`` of ``--rows`` rows x ``--tokens`` new tokens with the bf16
sampler. ``efficiency`` = t1 / (2 * t2) by the main thread's clock (1: perfect scaling), and ``work`` =
cpu(2 threads) / cpu(1 thread) (extra CPU time spent for the same work). The minimum over rounds is
reported (the least disturbed).

Usage: python bench/align_threads.py [--rows 8] [--tokens 32] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch


def _timed(fn: Any) -> dict[str, float]:
    c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    fn()
    return {"cpu_s": time.process_time() - c0, "main_thread_s": time.thread_time() - t0,
            "wall_s": time.perf_counter() - w0}  # fmt: skip


def _parts(rows: int, tokens: int) -> dict[str, Any]:
    """The two parts as callables on the default model (LoRA rank 8 policy, its bf16 sampler)."""
    from lmbricks.align.config import load_prompts
    from lmbricks.align.logprob import token_logprobs
    from lmbricks.align.rl import policy_gradient_loss
    from lmbricks.align.sample import SamplingConfig, encode_policy_prompts, load_policy, sample_responses
    from lmbricks.runtime import autocast
    from lmbricks.train.lora import LoraSection, attach_lora, merged_model

    model, tok = load_policy("smollm2-135m-instruct", torch.float32)
    attach_lora(model, LoraSection(rank=8, alpha=16), 0)
    sampler = merged_model(model).to(torch.bfloat16).eval()
    ids = encode_policy_prompts(tok, load_prompts("builtin:dialogue", rows, split="train"), True)
    gen = torch.Generator().manual_seed(0)
    resp = [torch.randint(0, 49152, (tokens,), generator=gen).tolist() for _ in ids]
    adv = torch.randn(len(ids), generator=gen)

    def update() -> None:
        with autocast("bf16", "cpu"):
            logp, mask = token_logprobs(model, ids, resp, recompute=True)
        loss, _ = policy_gradient_loss(logp, logp.detach() - 0.1, mask, adv, 0.05)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sampling() -> None:
        sample_responses(sampler, tok, ids, 1, SamplingConfig(max_new_tokens=tokens), seed=0)

    return {"update": update, "sampling": sampling}


def measure(rows: int, tokens: int, repeats: int) -> dict[str, Any]:
    """Both parts at 1 and 2 threads, alternating; the minima and the efficiencies."""
    parts = _parts(rows, tokens)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {p: {1: [], 2: []} for p in parts}
    for name, fn in parts.items():
        torch.set_num_threads(1)
        fn()  # warm-up
        for r in range(repeats):
            for threads in (1, 2) if r % 2 == 0 else (2, 1):
                torch.set_num_threads(threads)
                runs[name][threads].append(_timed(fn))
    out: dict[str, Any] = {}
    for name, by in runs.items():
        best = {n: {k: min(x[k] for x in rs) for k in rs[0]} for n, rs in by.items()}
        out[name] = {
            "threads_1": best[1], "threads_2": best[2],
            "efficiency": round(best[1]["main_thread_s"] / (2 * best[2]["main_thread_s"]), 3),
            "work": round(best[2]["cpu_s"] / best[1]["cpu_s"], 3),
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    import lmbricks

    lmbricks.tune_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=8, help="rows of the micro-batch and of the sampling")
    ap.add_argument("--tokens", type=int, default=32, help="response tokens per row")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per thread count")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    result = {"parts": measure(args.rows, args.tokens, args.repeats), "rows": args.rows, "tokens": args.tokens,
              "repeats": args.repeats, "clock": "minimum over rounds; cpu = time.process_time",
              "load_average": list(os.getloadavg()), "model": "smollm2-135m-instruct"}  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
