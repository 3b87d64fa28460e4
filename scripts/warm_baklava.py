"""WARM vs Baklava on the default model (docs/reward-models.md), and the figure of an earlier WARM run.

Both variants train M reward models on the same pairs with data-order seeds 0..M-1 and one learning
rate; WARM starts every member from the base model, Baklava member i from the i-th of successive
checkpoints of one SFT run (step 0 = the base, then the run's checkpoints). The SFT run must have
trained only its last ``--trainable-layers`` layers, so the trunk features (computed once, cached in
OUT/features.pt) are shared by all members of both variants.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python scripts/warm_baklava.py \
        --sft-run runs/issue9/sft-dialogue --prior runs/issue9/warm/results.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--sft-run", type=Path, required=True, help="an lmbricks train run (task sft) of MODEL")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--train", type=int, default=64, help="dialogue training pairs")
    ap.add_argument("--eval", type=int, default=48, help="pairs per test set")
    ap.add_argument("--trainable-layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/warm-baklava"))
    ap.add_argument("--img", type=Path, default=Path("docs/img"))
    ap.add_argument("--prior", type=Path, default=None, help="results.json of an earlier `reward warm` run to plot")
    args = ap.parse_args()

    from lmbricks.reward import RewardTrainConfig, load_pairs, run_warm
    from lmbricks.reward.report import plot_warm_variants
    from lmbricks.train.checkpoint import list_checkpoints

    if args.prior is not None:
        prior = json.loads(args.prior.read_text())
        png = plot_warm_variants({"WARM (seeds, lr)": prior}, args.img / "warm_members.png",
                                 f"WARM, {len(prior['members'])} members, {prior['n_train_pairs']} pairs")  # fmt: skip
        print("wrote", png)
    ckpts = [p for _, p in list_checkpoints(args.sft_run)]
    inits = [args.model, *map(str, ckpts)][: args.members]
    if len(inits) < args.members:
        raise SystemExit(f"{args.sft_run} has {len(ckpts)} checkpoints; {args.members} members need {args.members - 1}")
    train = load_pairs("builtin:dialogue", "train", 0)[: args.train]
    sets = {
        "dialogue": load_pairs("builtin:dialogue", "test", 0)[: args.eval],
        "chitchat (shift)": (load_pairs("builtin:chitchat", "validation", 0)
                             + load_pairs("builtin:chitchat", "test", 0))[: args.eval],
    }  # fmt: skip
    cfgs = [
        RewardTrainConfig(lr=args.lr, epochs=args.epochs, seed=i, head_seed=0, trainable_layers=args.trainable_layers)
        for i in range(args.members)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "features.pt"
    timings = {}
    results = {}
    for name, member_inits in (("WARM", None), ("Baklava", inits)):
        t0 = time.perf_counter()
        results[name] = run_warm(args.model, train, sets, cfgs, args.out / name.lower(), force=True,
                                 use_merge=False, inits=member_inits, feature_cache=cache,
                                 progress=lambda msg, _n: print(msg, flush=True) if msg else None)  # fmt: skip
        timings[name] = round(time.perf_counter() - t0, 1)
        print(name, {s: results[name]["warm"][s]["accuracy"] for s in sets}, f"{timings[name]} s", flush=True)
    title = f"{args.members} members, {len(train)} pairs, last {args.trainable_layers} layers"
    png = plot_warm_variants(results, args.img / "warm_baklava.png", title)
    summary = {
        "inits": inits,
        "timings_s": timings,
        "png": str(png),
        **{
            name: {
                "members": [{s: m[s]["accuracy"] for s in sets} for m in r["members"]],
                "mean_member": r["mean_member"],
                "ensemble": {s: r["ensemble"][s] for s in sets},
                "warm": {s: r["warm"][s] for s in sets},
            }
            for name, r in results.items()
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
