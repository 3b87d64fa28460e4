"""Dense vs 8-expert top-2 MoE vs Switch top-1 MoE: same tokens, same active parameters (docs/moe.md).

Writes the three ``lmbricks train`` configs to ``OUT/configs/*.yaml``, trains each (the same as
``lmbricks train OUT/configs/<arm>.yaml -o OUT/<arm>``, with the packed blocks built once and shared),
scores every checkpoint on held-out validation text per domain, traces the final MoE models' routing
per domain (``lmbricks.trace``), and writes ``OUT/results.json`` plus the plots under ``--img``.

The number of steps is the same for the three arms; with ``--budget-minutes`` it is chosen from the
speed of a few calibration steps of the slowest arm (so the whole run fits the budget on a busy
machine), capped by ``--steps``.

Usage (at most about 15 minutes on 2 busy CPU cores):
    nice -n 19 env OMP_NUM_THREADS=2 .venv/bin/python scripts/moe_experiment.py --budget-minutes 12
    .venv/bin/python scripts/moe_experiment.py --steps 10 --out /tmp/moe-smoke --img /tmp/moe-smoke  # smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from lmbricks.train.arms import ARM_LABELS, DOMAINS, arm_models, arm_train_config, run_arm, validation_blocks
from lmbricks.train.compare import interpretation, load_heatmap_rows, summary_table, val_curve_series

TOKENIZER = "smollm2-135m-instruct"


def calibrate(cfg: Any, run_dir: Path, chunks: torch.Tensor, tokenizer: Any, steps: int = 4) -> float:
    """Median seconds per optimizer step of ``cfg`` over a few steps (the first is warm-up)."""
    from lmbricks.train import train

    probe = cfg.model_copy(update={"steps": steps, "checkpoint_every": steps, "keep_checkpoints": 1})
    records = train(probe, run_dir, force=True, chunks=chunks, tokenizer=tokenizer, report=False).records
    shutil.rmtree(run_dir, ignore_errors=True)
    times = sorted(r["tokens"] / r["tokens_per_s"] / r["step"] for r in records[1:])
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/moe_experiment"))
    ap.add_argument("--img", type=Path, default=Path("docs/img"), help="where the PNGs go")
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps (the cap with --budget-minutes)")
    ap.add_argument("--budget-minutes", type=float, default=None, help="choose steps to fit this wall time")
    ap.add_argument("--evals", type=int, default=8, help="validation points per arm")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--expert-intermediate", type=int, default=128, help="top-2 expert width I (dense = 2I)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--tokens-per-domain", type=int, default=100_000)
    ap.add_argument("--val-blocks", type=int, default=4, help="validation blocks per domain")
    args = ap.parse_args()

    from lmbricks.report import bar_chart, heatmap, line_chart
    from lmbricks.train import load_config
    from lmbricks.train.data import build_chunks
    from lmbricks.train.setup import load_tokenizer

    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "configs").mkdir(exist_ok=True)
    tokenizer = load_tokenizer(TOKENIZER)
    models = arm_models(args.hidden, args.layers, 4, args.expert_intermediate, num_kv_heads=2)

    def configs_for(steps: int) -> dict[str, Any]:
        out = {}
        for arm, model in models.items():
            mapping = arm_train_config(
                model,
                tokenizer=TOKENIZER,
                steps=steps,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                lr=args.lr,
                eval_every=max(1, steps // args.evals),
                max_tokens_per_domain=args.tokens_per_domain,
            )
            path = args.out / "configs" / f"{arm}.yaml"
            path.write_text(yaml.safe_dump(mapping, sort_keys=False))
            out[arm] = load_config(path)
        return out

    configs = configs_for(args.steps)
    first = next(iter(configs.values()))
    assert first.data is not None
    key = hashlib.sha256(json.dumps(first.data.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]
    cached = args.out / f"chunks-{key}.pt"
    if cached.exists():
        chunks = torch.load(cached)
    else:  # what `lmbricks train` builds from the data section, tokenised once for the three arms
        chunks = build_chunks(first.data, tokenizer)
        torch.save(chunks, cached)
    val = validation_blocks(tokenizer, DOMAINS, args.seq_len, args.val_blocks)
    print(f"{len(chunks)} training blocks of {args.seq_len}; validation {[len(v) for v in val.values()]} blocks")
    steps = args.steps
    if args.budget_minutes is not None:
        step_s = calibrate(configs["switch"], args.out / "calibration", chunks, tokenizer)
        spent = time.perf_counter() - start
        # three arms plus ~35% for checkpoints, validation and tracing (measured: 25-35%)
        steps = min(args.steps, int((args.budget_minutes * 60 - spent) / (3 * 1.35 * step_s)))
        print(f"calibration: {step_s:.2f} s per step -> {steps} steps per arm", flush=True)
        configs = configs_for(steps)

    results: dict[str, Any] = {}
    for arm, cfg in configs.items():
        t0 = time.perf_counter()
        results[arm] = run_arm(cfg, args.out / arm, val, chunks=chunks, tokenizer=tokenizer)
        final = results[arm]["val_curve"][-1][1]["mean"]
        print(f"{arm}: val loss {final:.4f}, {time.perf_counter() - t0:.0f} s", flush=True)

    summary = {
        "arms": results,
        "settings": vars(args) | {"out": str(args.out), "img": str(args.img), "steps": steps},
        "training_blocks": len(chunks),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "interpretation": interpretation(results),
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))

    args.img.mkdir(parents=True, exist_ok=True)
    line_chart(
        args.img / "moe_val_loss.png",
        val_curve_series(results),
        "Validation loss (mean over 5 domains)",
        "training tokens (thousands)",
        "nats per token",
    )
    final = {ARM_LABELS[a]: {d: v for d, v in r["val_curve"][-1][1].items() if d != "mean"} for a, r in results.items()}
    bar_chart(args.img / "moe_val_loss_by_domain.png", final, "Final validation loss by domain", "nats per token")
    for arm in ("top2", "switch"):
        matrix, load_rows, load_cols = load_heatmap_rows(results[arm]["expert_load"])
        heatmap(
            args.img / f"moe_domain_load_{arm}.png",
            matrix,
            load_rows,
            load_cols,
            f"{ARM_LABELS[arm]}: share of each domain's routed pairs",
            annotate=False,
        )

    rows, cols = summary_table(results)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    for arm in ("top2", "switch"):
        load = results[arm]["expert_load"]
        print(
            arm,
            "MI bits per layer",
            [round(v, 3) for v in load["mutual_information_bits"]],
            "max/mean",
            [round(v, 2) for v in load["max_over_mean"]],
        )
    print(summary["interpretation"])
    print(f"wall {summary['wall_seconds']} s")


if __name__ == "__main__":
    main()
