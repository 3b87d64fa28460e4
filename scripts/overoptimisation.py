"""Reward over-optimisation under best-of-n, and WARM's claim (docs/alignment.md).

A **gold** reward model is trained on the first ``--gold-pairs`` dialogue training pairs; M **proxy**
members on the first ``--proxy-pairs`` of them with a fraction ``--flip`` of the labels swapped, from
one initialisation (shared head seed) with their own data-order seed and learning rate; their
**WARM** weight average and their prediction **ensemble**. Every reward model shares the base
model's frozen trunk (all but the last ``--trainable-layers`` layers), so each response's trunk
features are computed once and every reward model only runs its own top layers.

``--n-max`` responses are sampled once per held-out prompt (``builtin:dialogue@test``) and scored by
every reward model; best-of-n for each proxy and n = 1, 2, 4, ... is judged by the gold model
(expectation over all n-subsets), against KL = log n - (n - 1) / n. At n = n-max, WARM's pick and
the ensemble's pick play each member's pick head to head under the gold reward.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/overoptimisation.py --out /work/runs/warm-exp \
        --json docs/bench/overoptimisation-2026-12-07.json --plot docs/img/overoptimisation.png
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--gold-pairs", type=int, default=600)
    ap.add_argument("--proxy-pairs", type=int, default=120)
    ap.add_argument("--test-pairs", type=int, default=60, help="held-out pairs for the accuracies")
    ap.add_argument("--flip", type=float, default=0.25, help="share of proxy labels swapped")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--lrs", default="1e-4,2e-4,5e-5,1.5e-4", help="member learning rates (cycled)")
    ap.add_argument("--trainable-layers", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=24, help="held-out prompts")
    ap.add_argument("--n-max", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="run directory (samples.json)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--plot", type=Path, default=None)
    return ap.parse_args()


def train_rms(args: argparse.Namespace, rm: Any, tok: Any, start: int) -> tuple[dict[str, dict[str, Any]], dict]:
    """Gold, members, WARM: {name: top state}, and their accuracies on held-out pairs."""
    from lmbricks.reward import RewardTrainConfig, load_pairs
    from lmbricks.reward.train import train_on_features
    from lmbricks.reward.warm import average_states, pair_features, scores_of, trained_keys
    from lmbricks.runtime import autocast, resolve_precision

    pairs = load_pairs("builtin:dialogue", "train")[: args.gold_pairs]
    test = load_pairs("builtin:dialogue", "test")[: args.test_pairs]
    base = RewardTrainConfig(trainable_layers=args.trainable_layers, max_len=128, epochs=2, precision="bf16")
    cpu = torch.device("cpu")
    with autocast(resolve_precision("bf16", cpu), cpu):  # the frozen trunk's features, computed once
        feats, _ = pair_features(rm, tok, {"train": pairs, "test": test}, base)
    feats = {k: ([t.float() for t in c], [t.float() for t in r]) for k, (c, r) in feats.items()}
    keys = trained_keys(rm, start)
    init = {k: v.clone() for k, v in rm.state_dict().items() if k in keys}
    tops: dict[str, dict[str, Any]] = {}

    def fit(name: str, chosen: list, rejected: list, cfg: Any) -> None:
        rm.load_state_dict(init, strict=False)
        train_on_features(rm, chosen, rejected, cfg)
        tops[name] = {k: v.detach().clone() for k, v in rm.state_dict().items() if k in keys}

    fit("gold", *feats["train"], base.model_copy(update={"lr": 1e-4, "epochs": 2}))
    rng = random.Random(args.seed)
    c, r = feats["train"][0][: args.proxy_pairs], feats["train"][1][: args.proxy_pairs]
    flipped = set(rng.sample(range(len(c)), int(round(args.flip * len(c)))))
    pc = [r[i] if i in flipped else c[i] for i in range(len(c))]
    pr = [c[i] if i in flipped else r[i] for i in range(len(c))]
    lrs = [float(x) for x in args.lrs.split(",")]
    for m in range(args.members):
        fit(f"m{m}", pc, pr, base.model_copy(update={"seed": m + 1, "lr": lrs[m % len(lrs)], "epochs": 3}))
    tops["warm"] = average_states([tops[f"m{m}"] for m in range(args.members)])
    acc = {}
    for name, st in tops.items():
        rm.load_state_dict(st, strict=False)
        rc, rr = scores_of(rm, feats["test"], start)
        acc[name] = float((rc > rr).float().mean())
    info = {"train_pairs": len(feats["train"][0]), "proxy_pairs": len(c), "flipped": len(flipped),
            "test_pairs": len(feats["test"][0]), "test_accuracy": acc}  # fmt: skip
    return tops, info


def sample(args: argparse.Namespace) -> tuple[list[str], Any, float]:
    """Held-out prompts and n-max samples of each (with the CPU seconds it took)."""
    from lmbricks.align import SamplingConfig, sample_responses
    from lmbricks.align.sample import encode_policy_prompts, load_policy
    from lmbricks.reward import load_pairs

    prompts = list(dict.fromkeys(p.prompt for p in load_pairs("builtin:dialogue", "test")))[: args.prompts]
    model, tok = load_policy(args.model, torch.bfloat16)
    t0 = time.process_time()
    ids = encode_policy_prompts(tok, prompts, chat=True)
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=64)
    s = sample_responses(model.eval(), tok, ids, args.n_max, cfg, seed=args.seed)
    return prompts, s, time.process_time() - t0


def score_all(rm: Any, tok: Any, start: int, tops: dict, prompts: list[str], texts: list[list[str]]) -> dict:
    """{name: (P, N) scores} of every response under every reward model (trunk features once)."""
    from lmbricks.reward.train import precompute, render_pair_text, score_features
    from lmbricks.runtime import autocast, resolve_precision

    flat = [render_pair_text(tok, p, r, "plain") for p, rs in zip(prompts, texts, strict=True) for r in rs]
    seqs = [torch.tensor(tok(t, add_special_tokens=False)["input_ids"][:160]) for t in flat]
    with autocast(resolve_precision("bf16", torch.device("cpu")), torch.device("cpu")):
        feats = [f.float() for f in precompute(rm, seqs, start, batch_size=16)]
    out = {}
    for name, st in tops.items():
        rm.load_state_dict(st, strict=False)
        out[name] = score_features(rm, feats, start).reshape(len(prompts), -1)  # (P, N)
    return out


def analyse(scores: dict, members: int, n_max: int) -> dict[str, Any]:
    """Gold reward of best-of-n per proxy, the peaks, and the head-to-head win rates at n-max."""
    from lmbricks.align.bon import bon_kl
    from lmbricks.align.overopt import bon_expected, bootstrap_mean_ci, win_rate

    gold = scores["gold"]
    scores = {**scores, "ensemble": torch.stack([scores[f"m{m}"] for m in range(members)]).mean(0)}
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= n_max]
    curves: dict[str, list[dict[str, float]]] = {}
    per_prompt: dict[str, dict[int, torch.Tensor]] = {}
    for name in ["gold", *[f"m{m}" for m in range(members)], "warm", "ensemble"]:
        per_prompt[name] = {n: bon_expected(scores[name], gold, n) for n in ns}
        curves[name] = [{"n": n, "kl": bon_kl(n), "gold": float(v.mean()), "ci95": list(bootstrap_mean_ci(v)),
                         "proxy": float(bon_expected(scores[name], scores[name], n).mean())}
                        for n, v in per_prompt[name].items()]  # fmt: skip
    single = {n: torch.stack([per_prompt[f"m{m}"][n] for m in range(members)]).mean(0) for n in ns}
    curves["single_mean"] = [{"n": n, "kl": bon_kl(n), "gold": float(v.mean()), "ci95": list(bootstrap_mean_ci(v))}
                             for n, v in single.items()]  # fmt: skip
    pick = {name: gold.gather(1, scores[name].argmax(1, keepdim=True))[:, 0] for name in scores}  # (P,) at n-max
    heads = {}
    for who in ("warm", "ensemble"):
        per = {f"m{m}": win_rate(pick[who], pick[f"m{m}"]).to_dict() for m in range(members)}
        pooled = win_rate(torch.cat([pick[who]] * members), torch.cat([pick[f"m{m}"] for m in range(members)]))
        heads[who] = {"per_member": per, "pooled": pooled.to_dict()}
    peaks = {name: max(c, key=lambda e: e["gold"]) for name, c in curves.items()}
    return {"ns": ns, "curves": curves, "peaks": {k: {"n": v["n"], "kl": v["kl"], "gold": v["gold"]}
            for k, v in peaks.items()}, "head_to_head_at_n_max": heads}  # fmt: skip


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {
        "warm": ("C0", "WARM (weight average)"),
        "ensemble": ("C2", "prediction ensemble"),
        "single_mean": ("C3", "single proxy (mean of members)"),
        "gold": ("k", "gold itself (oracle)"),
    }
    for name, c in res["curves"].items():
        kl = [e["kl"] for e in c]
        g = [e["gold"] for e in c]
        if name.startswith("m") and name[1:].isdigit():
            ax.plot(kl, g, color="C3", alpha=0.3, lw=0.8)
            continue
        col, label = styles[name]
        ax.plot(kl, g, color=col, marker="o", ms=3, label=label, ls="--" if name == "gold" else "-")
        ax.fill_between(kl, [e["ci95"][0] for e in c], [e["ci95"][1] for e in c], color=col, alpha=0.12)
    ax.set_xlabel("KL(best-of-n || policy), nats")
    ax.set_ylabel("gold reward of the pick")
    ax.set_title("best-of-n against proxies (thin: each member), 95% bootstrap bands")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from lmbricks.reward.warm import base_reward_model

    args.out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.time(), time.process_time()
    rm, tok = base_reward_model(args.model)
    rm.eval()
    start = rm.num_layers - args.trainable_layers
    tops, info = train_rms(args, rm, tok, start)
    c1 = time.process_time()
    prompts, s, sample_cpu = sample(args)
    (args.out / "samples.json").write_text(json.dumps({"prompts": prompts, "texts": s.texts}, indent=1))
    c2 = time.process_time()
    scores = score_all(rm, tok, start, tops, prompts, s.texts)
    c3 = time.process_time()
    res = {"command": "scripts/overoptimisation.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                              vars(args).items() if v is not None),  # fmt: skip
           "model": args.model, "setup": {**{k: v for k, v in vars(args).items() if k not in ("out", "json", "plot")},
           **info}, "prompts": len(prompts), "sampled_tokens": s.tokens,  # fmt: skip
           **analyse(scores, args.members, args.n_max),
           "cpu_seconds": {"reward_models": c1 - c0, "sampling": sample_cpu, "scoring": c3 - c2},
           "wall_seconds": time.time() - t0, "threads": args.threads,
           "clock_note": "CPU time (time.process_time) on a shared, loaded 2-core machine"}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    if args.plot is not None:
        plot(res, args.plot)
    print(json.dumps({k: res[k] for k in ("peaks", "head_to_head_at_n_max", "cpu_seconds")}, indent=1, default=str))


if __name__ == "__main__":
    main()
