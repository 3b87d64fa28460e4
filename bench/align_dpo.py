"""Memory and CPU time of one ``lmbricks align dpo`` step with and without ``recompute``, in fresh processes.

Each workload (bench/harness.py: one forked process per workload and round) loads the default model
(fp32 master weights, LoRA rank 8 as ``run_dpo`` attaches it), encodes ``--pairs`` ``builtin:dialogue``
train pairs, computes the reference log-probabilities (no gradients), then resets the process's peak
resident memory (``/proc/self/clear_refs``) and runs one DPO step of all the pairs under bf16 autocast
(``pair_logprobs`` with ``recompute`` on or off, the DPO loss, backward, AdamW). It reports the resident
memory before the step, the step's peak (``VmHWM`` after the reset), the step's process CPU time, and
the sum of the LoRA gradients' absolute values (the same for both sides: recompute changes no
gradient, tested in tests/align/test_align_dpo.py).

Usage: python bench/align_dpo.py [--pairs 8] [--rounds 1] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch


def _rss_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e6
    return 0.0


def dpo(recompute: bool, pairs: int, threads: int) -> dict[str, Any]:
    """One DPO step of ``pairs`` pairs: memory before, the step's peak, its CPU seconds, the gradient sum."""
    from lmbricks.align.dpo import dpo_loss, encode_preferences, pair_logprobs, reference_logprobs
    from lmbricks.align.sample import load_policy
    from lmbricks.reward.pipeline import load_pair_spec
    from lmbricks.runtime import autocast
    from lmbricks.train.lora import LoraSection, attach_lora

    torch.set_num_threads(threads)
    model, tok = load_policy("smollm2-135m-instruct", torch.float32)
    enc = encode_preferences(tok, load_pair_spec("builtin:dialogue", "train", pairs, 0), True, 512)
    with autocast("bf16", "cpu"):
        ref_c, ref_r = reference_logprobs(model, enc)
    attach_lora(model, LoraSection(rank=8, alpha=16), 0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95))
    before = _rss_gb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    c0 = time.process_time()
    idx = list(range(len(enc.prompts)))
    with autocast("bf16", "cpu"):
        pc, pr = pair_logprobs(model, enc, idx, recompute)
    loss, _ = dpo_loss(pc, pr, ref_c, ref_r, 0.1)
    loss.backward()
    grad_sum = float(sum(p.grad.abs().sum() for p in params if p.grad is not None))
    opt.step()
    cpu = time.process_time() - c0
    return {"rss_before_step_gb": round(before, 3), "step_peak_rss_gb": round(_rss_gb("VmHWM"), 3),
            "step_cpu_s": round(cpu, 2), "grad_abs_sum": grad_sum, "pairs": len(idx)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    from harness import Workload, alternate

    import lmbricks

    lmbricks.tune_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--pairs", type=int, default=8, help="pairs in the step (DPO's batch_size)")
    ap.add_argument("--rounds", type=int, default=1, help="fresh processes per side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    kw = {"pairs": args.pairs, "threads": args.threads}
    runs = alternate({"recompute": Workload(__file__, dpo.__name__, {**kw, "recompute": True}),
                      "keep": Workload(__file__, dpo.__name__, {**kw, "recompute": False})}, args.rounds)  # fmt: skip
    result = {side: {k: max(r[k] for r in rs) for k in ("step_peak_rss_gb", "rss_before_step_gb", "step_cpu_s")}
              for side, rs in runs.items()}  # fmt: skip
    result |= {"runs": runs, "pairs": args.pairs, "threads": args.threads, "lora_rank": 8, "precision": "bf16",
               "model": "smollm2-135m-instruct", "clock": "cpu (time.process_time per process)",
               "load_average": list(os.getloadavg())}  # fmt: skip
    text = json.dumps(result, indent=2, default=str)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
