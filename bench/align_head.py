"""The RL update's output head side by side: the chunked per-token log-probabilities against the full logits.

One micro-batch's head of the default model's shape (``--rows`` response tokens, hidden 576, vocabulary
49,152, a frozen tied head as in a LoRA run) under bf16 autocast: forward, then a backward with a
gradient per token. ``full`` is the path before (``lm_head(h).float()``, ``cross_entropy`` per token);
``chunked`` is :func:`lmbricks.align.head_logprob.head_logprobs`. For each, in one process, alternating
over ``--rounds``: the process CPU seconds (median), the bytes autograd keeps for the backward pass,
and the largest deviation of the log-probabilities and of dL/dh from ``full``'s.

Usage: python bench/align_head.py [--rows 1024] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmbricks.align.head_logprob import head_logprobs

H, V = 576, 49152


def _run(side: str, h0: torch.Tensor, w: torch.Tensor, t: torch.Tensor, up: torch.Tensor) -> dict[str, Any]:
    kept = [0]

    def keep(x: torch.Tensor) -> torch.Tensor:
        kept[0] += x.numel() * x.element_size()
        return x

    h = h0.clone().requires_grad_(True)
    c0 = time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x), torch.autocast("cpu", dtype=torch.bfloat16):
        if side == "full":
            out = -F.cross_entropy(F.linear(h, w).float(), t, reduction="none")  # (N,)
        else:
            out = head_logprobs(h, w, t)
    (out * up).sum().backward()
    assert h.grad is not None
    return {"cpu_s": time.process_time() - c0, "kept_bytes": kept[0], "logp": out.detach(), "dh": h.grad}


def measure(rows: int, rounds: int) -> dict[str, Any]:
    """Both sides ``rounds`` times, alternating; medians, bytes kept, deviations from ``full``."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(V, H, generator=g) * 0.05  # frozen (a LoRA run's tied head)
    h = torch.randn(rows, H, generator=g)
    t, up = torch.randint(0, V, (rows,), generator=g), torch.randn(rows, generator=g)
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "chunked": []}
    for r in range(rounds + 1):  # round 0 warms up
        for side in ("full", "chunked") if r % 2 else ("chunked", "full"):
            res = _run(side, h, w, t, up)
            if r > 0:
                runs[side].append(res)
    full, chunked = runs["full"][0], runs["chunked"][0]
    cpu = {s: statistics.median(x["cpu_s"] for x in rs) for s, rs in runs.items()}
    return {
        "cpu_s": {s: round(v, 3) for s, v in cpu.items()},
        "chunked_vs_full_cpu": round(cpu["chunked"] / cpu["full"], 3),
        "kept_mb": {s: round(rs[0]["kept_bytes"] / 1e6, 1) for s, rs in runs.items()},
        "max_logp_diff": float((chunked["logp"] - full["logp"]).abs().max()),
        "max_dh_diff": float((chunked["dh"] - full["dh"]).abs().max()),
        "max_dh": float(full["dh"].abs().max()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=1024, help="response tokens (16 rows x 64 tokens)")
    ap.add_argument("--rounds", type=int, default=5, help="timed calls per side")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    result = measure(args.rows, args.rounds) | {
        "rows": args.rows, "hidden": H, "vocab": V, "rounds": args.rounds, "threads": 1, "precision": "bf16 autocast",
        "clock": "cpu (time.process_time)", "load_average": list(os.getloadavg())}  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
