"""Benchmark: InfLLM's prefill and decoding cost per length, this tree against an earlier commit.

Each (side, length) runs in a fresh process with one torch thread: the side's ``src/`` (this
tree's, or ``--before REV``'s, extracted with ``git archive``) on ``PYTHONPATH``; the default
model in ``precision: auto``'s weights; a synthetic passkey prompt of ``length`` tokens with the key
at 50% (the same seeded key on both sides); ``generate`` with the default ``InfLLMConfig`` and 8
greedy tokens. The order of the two sides alternates from one length to the next. Prints one JSON
object: per length and side the prefill's CPU seconds (and per 1k tokens), the mean CPU
milliseconds per decoding step, the tokens and whether the key was found; ``after_vs_before`` is
the ratio of the prefill CPU seconds. At ``--fp32-lengths`` this tree also runs with fp32 weights
(``after_fp32``).

Usage: python bench/memory_prefill.py [--lengths 4096,8192,16384] [--before 76058f3] [--fp32-lengths 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def worker(length: int, precision_asked: str) -> dict[str, Any]:
    """One passkey prompt of ``length`` tokens through ``generate`` with InfLLM's defaults."""
    import torch

    import lmbricks
    from lmbricks.nn.load import load_model
    from lmbricks.plugins.memory.config import InfLLMConfig
    from lmbricks.plugins.memory.generate import generate
    from lmbricks.plugins.memory.passkey import filler_ids, needle_prompt
    from lmbricks.runtime.precision import inference_dtype, resolve_precision

    lmbricks.tune_process()
    torch.set_num_threads(1)
    precision = resolve_precision(precision_asked, "cpu")
    model, tok = load_model("smollm2-135m-instruct", dtype=inference_dtype(precision))
    key = "48213"
    ids = needle_prompt(tok, filler_ids(tok, "synthetic", length), length, 0.5, key, "synthetic")
    out = generate(model.eval(), torch.tensor(ids), InfLLMConfig(), max_new_tokens=8)
    answer = tok.decode(out.tokens, skip_special_tokens=True)
    steps = max(1, len(out.per_token_cpu_s))
    return {
        "precision": precision, "tokens": out.tokens, "answer": answer, "correct": answer.strip().startswith(key),
        "prefill_cpu_s": out.prefill_cpu_s, "prefill_wall_s": out.prefill_s,
        "prefill_cpu_s_per_1k": out.prefill_cpu_s / length * 1000,
        "per_token_cpu_ms": sum(out.per_token_cpu_s) / steps * 1000, "peak_rss_mb": out.peak_rss_mb,
        "load_avg_1min": os.getloadavg()[0],
    }  # fmt: skip


def _run(src: Path, length: int, precision: str = "auto") -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", str(length), "--precision", precision]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,8192,16384")
    parser.add_argument("--before", default="76058f3", help="the commit measured against")
    parser.add_argument("--fp32-lengths", default="8192", help="lengths where this tree also runs fp32 weights")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.precision)))
        return
    import lmbricks

    lmbricks.tune_process()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    with tempfile.TemporaryDirectory(prefix="memory-prefill-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        sides = {"before": Path(tmp) / "src", "after": ROOT / "src"}
        rows: dict[str, Any] = {}
        for i, length in enumerate(int(n) for n in args.lengths.split(",")):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            row = {side: _run(sides[side], length) for side in order}
            row["after_vs_before"] = row["after"]["prefill_cpu_s"] / row["before"]["prefill_cpu_s"]
            row["same_tokens"] = row["after"]["tokens"] == row["before"]["tokens"]
            if str(length) in args.fp32_lengths.split(","):
                row["after_fp32"] = _run(sides["after"], length, "fp32")
                row["after_fp32_vs_after"] = row["after_fp32"]["prefill_cpu_s"] / row["after"]["prefill_cpu_s"]
            rows[str(length)] = row
            print(json.dumps({length: row}), file=sys.stderr, flush=True)
    report = {
        "command": f"python bench/memory_prefill.py --lengths {args.lengths} --before {args.before} "
        f"--fp32-lengths {args.fp32_lengths}",
        "after": commit.stdout.strip(), "before": args.before, "threads": 1, "clock": "process CPU time",
        "lengths": rows,
    }  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
