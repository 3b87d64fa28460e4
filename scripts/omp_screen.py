"""OMP's bf16 screen against exact scoring, on real new tokens of a transplant pair (docs/tokenizers.md).

Runs :func:`lmbricks.tokens.omp.omp` on ``--tokens`` new tokens (a seeded sample) of MODEL given
DONOR's tokenizer, once with the default bf16 screen and once scoring every anchor exactly, and
prints JSON: process CPU seconds of each, the mean relative residual in the donor's space, the
share of identical picks per step and the share of chosen atoms both runs share.

Run from the repository root (one thread)::

    OMP_NUM_THREADS=1 python scripts/omp_screen.py --out runs/tokens/omp-screen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--donor", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens in the sample (one OMP batch)")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from lmbricks.runtime import tune_process
    from lmbricks.tokens.omp import SCREEN, omp
    from lmbricks.tokens.pipeline import sample_new_rows

    tune_process()
    torch.set_num_threads(1)
    targets, anchors = sample_new_rows(args.model, args.donor, args.tokens, seed=0)  # (N, Dd), (M, Dd)
    result: dict[str, Any] = {"model": args.model, "donor": args.donor, "tokens": args.tokens, "k": args.k}
    result |= {"anchors": anchors.shape[0], "screen": SCREEN, "threads": 1, "clock": "process CPU time"}
    picks = {}
    for name, screen in (("screened", SCREEN), ("exact", 0)):
        cpu0 = time.process_time()
        idx, coef = omp(targets, anchors, args.k, screen=screen)
        cpu = time.process_time() - cpu0
        rebuilt = torch.bmm(coef[:, None, :], anchors[idx]).squeeze(1)
        residual = ((targets - rebuilt).norm(dim=1) / targets.norm(dim=1)).mean().item()
        result[name] = {"cpu_s": round(cpu, 2), "mean_relative_residual": round(residual, 6)}
        picks[name] = idx
    same = (picks["screened"] == picks["exact"]).float().mean(0)  # (k,) per step
    shared = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(picks["screened"], picks["exact"], strict=True))
    result["same_pick_by_step"] = [round(v, 4) for v in same.tolist()]
    result["shared_atoms"] = round(shared / picks["exact"].numel(), 4)
    result["speedup"] = round(result["exact"]["cpu_s"] / result["screened"]["cpu_s"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
