"""Long passkey trials, one cell at a time, each written to the JSON as soon as it ends.

``lmbricks plugins memory eval`` writes its folder when every trial is done; a 64k trial costs
about ten CPU minutes, so on a shared machine this driver calls the same ``run_passkey`` once per
(length, depth) cell and rewrites ``--out`` (atomically) after each one. A stopped run keeps the
trials it finished. Cell ``i`` draws its key with seed ``--seed + i``, so every cell has its own key.

    OMP_NUM_THREADS=1 python scripts/memory_passkey_trials.py --lengths 65536 \
        --depths 0.5,0,1,0.25,0.75 --methods infllm --out docs/bench/passkey-64k-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.nn.load import load_model
from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.plugins.memory.passkey import PasskeyJob, PasskeyResult, PasskeyTrial, accuracy_heatmap, run_passkey
from lmbricks.runtime.precision import inference_dtype, resolve_precision


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _write(path: Path, record: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def plot(record_path: Path, png: Path) -> dict[str, object]:
    """The heat map of a trials JSON (``accuracy_heatmap``) and each method's Wilson 95% interval."""
    trials = json.loads(record_path.read_text())["trials"]
    names = {f.name for f in fields(PasskeyTrial)}
    kept = [PasskeyTrial(**{k: v for k, v in t.items() if k in names}) for t in trials]
    job = PasskeyJob(
        lengths=tuple(sorted({t.length for t in kept})),
        depths=tuple(sorted({t.depth for t in kept})),
        methods=tuple(sorted({t.method for t in kept})),  # type: ignore[misc]
    )
    result = PasskeyResult(job, kept)
    summary: dict[str, object] = {}
    for method in job.methods:
        accuracy_heatmap(result, method, png.with_name(png.stem + f"_{method}" + png.suffix))
        hits = [t.correct for t in kept if t.method == method]
        summary[method] = {"correct": sum(hits), "trials": len(hits), "wilson95": wilson_interval(sum(hits), len(hits))}
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--lengths", default="65536")
    ap.add_argument("--depths", default="0.5,0,1,0.25,0.75")
    ap.add_argument("--methods", default="infllm")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--seed", type=int, default=17000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--heatmap", type=Path, default=None, help="only draw --out's trials as PNG heat maps")
    args = ap.parse_args()
    if args.heatmap is not None:
        print(json.dumps(plot(args.out, args.heatmap)))
        return
    precision = resolve_precision(args.precision, "cpu")
    model, tok = load_model(args.model, dtype=inference_dtype(precision))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record: dict[str, object] = {
        "command": "OMP_NUM_THREADS=1 python scripts/memory_passkey_trials.py "
        f"--lengths {args.lengths} --depths {args.depths} --methods {args.methods} "
        f"--precision {args.precision} --seed {args.seed} --out {args.out}",
        "commit": commit, "model": args.model, "precision": precision,
        "threads": torch.get_num_threads(), "infllm": asdict(InfLLMConfig()),
        "clock": "prefill_cpu_s / per_token_cpu_s: this process's CPU time; *_s without cpu: wall",
        "trials": [],
    }  # fmt: skip
    trials: list[dict[str, object]] = []
    cells = [(n, d) for n in map(int, args.lengths.split(",")) for d in _floats(args.depths)]
    for i, (length, depth) in enumerate(cells):
        job = PasskeyJob(lengths=(length,), depths=(depth,), methods=tuple(args.methods.split(",")), seed=args.seed + i)
        load0, t0 = os.getloadavg()[0], time.time()
        for trial in run_passkey(model.eval(), tok, job, InfLLMConfig()).trials:
            trials.append({**asdict(trial), "seed": job.seed, "load_at_start": load0, "wall_clock_s": time.time() - t0})
            print(json.dumps(trials[-1]), flush=True)
        record["trials"] = trials
        _write(args.out, record)


if __name__ == "__main__":
    main()
