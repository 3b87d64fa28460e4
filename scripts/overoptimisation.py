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

With ``--rl-steps N``, ``lmbricks align rl``'s ``run_rl`` (RLOO, LoRA rank 8) trains one policy against
each of ``--rl-targets`` (a member ``m<i>``, ``warm`` or ``ensemble``) through a shared-trunk scorer; every
step's samples are also judged by the gold model (never optimised), giving gold reward against the
sequence KL to the initial policy along each run. The final policies then sample ``--rl-samples``
responses for each held-out prompt: gold reward, KL, and the gold head to head of each later target's
policy over the first's (Wilson interval). ``--reuse-samples DIR``: score an earlier run's samples.

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
    ap.add_argument(
        "--reuse-samples",
        type=Path,
        default=None,
        help="an earlier run directory with the same prompts, n-max, new tokens and seed: its samples",
    )
    ap.add_argument("--rl-steps", type=int, default=0, help="RL steps per policy (0: best-of-n only)")
    ap.add_argument("--rl-targets", default="m0,warm", help="proxies RL optimises (m<i>, warm, ensemble)")
    ap.add_argument("--rl-prompts-per-step", type=int, default=8)
    ap.add_argument("--rl-samples", type=int, default=4, help="samples per prompt (RLOO group; held-out too)")
    ap.add_argument("--rl-max-new-tokens", type=int, default=None, help="default: --max-new-tokens")
    ap.add_argument("--rl-lr", type=float, default=1e-3, help="LoRA (rank 8) learning rate")
    ap.add_argument("--rl-kl", type=float, default=0.01, help="KL coefficient")
    ap.add_argument("--rl-bin", type=int, default=5, help="steps per point of the RL curve")
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


def cached_rms(args: argparse.Namespace, rm: Any, tok: Any, start: int) -> tuple[dict[str, dict[str, Any]], dict]:
    """:func:`train_rms`, kept in ``--out``/reward_models.pt and reused when the settings that shape it match."""
    keys = ("model", "gold_pairs", "proxy_pairs", "test_pairs", "flip", "members", "lrs", "trainable_layers", "seed")
    setup = {k: getattr(args, k) for k in keys}
    cache = args.out / "reward_models.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved["setup"] == setup:
            return saved["tops"], saved["info"]
    tops, info = train_rms(args, rm, tok, start)
    torch.save({"setup": setup, "tops": tops, "info": info}, cache)
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


def reused_samples(args: argparse.Namespace) -> tuple[list[str], list[list[str]], int, float]:
    """The samples of an earlier run (``samples.json`` and its ``overoptimisation.json``), checked to be
    drawn as this run would draw them; their token count and sampling CPU time are the earlier run's."""
    from lmbricks.errors import ConfigError

    d = args.reuse_samples
    old = json.loads((d / "overoptimisation.json").read_text())
    for key in ("model", "prompts", "n_max", "max_new_tokens", "seed"):
        if old["setup"][key] != getattr(args, key):
            raise ConfigError(f"{d}: drawn with {key} = {old['setup'][key]!r}, this run asks {getattr(args, key)!r}")
    saved = json.loads((d / "samples.json").read_text())
    return saved["prompts"], saved["texts"], int(old["sampled_tokens"]), float(old["cpu_seconds"]["sampling"])


def score_all(rm: Any, tok: Any, start: int, tops: dict, prompts: list[str], texts: list[list[str]]) -> dict:
    """{name: (P, N) scores} of every response under every reward model (trunk features once)."""
    from lmbricks.align.scorer import SharedTrunkScorer

    scorer = SharedTrunkScorer(rm, tok, start, tops, ["gold"])
    scorer([p for p, rs in zip(prompts, texts, strict=True) for _ in rs], [r for rs in texts for r in rs])
    return {name: v.reshape(len(prompts), -1) for name, v in scorer.last.items()}  # (P, N) each


def analyse(scores: dict, members: int, n_max: int) -> dict[str, Any]:
    """Gold reward of best-of-n per proxy, the peaks, and the head-to-head win rates at n-max."""
    from lmbricks.align.bon import bon_kl
    from lmbricks.align.overopt import bon_expected, bootstrap_mean_ci, win_rate

    gold = scores["gold"]
    scores = {**scores, "ensemble": torch.stack([scores[f"m{m}"] for m in range(members)]).mean(0)}
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= n_max]
    curves: dict[str, list[dict[str, Any]]] = {}  # n, kl, gold, proxy: floats; ci95: [low, high]
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


def rl_job(args: argparse.Namespace) -> Any:
    """The ``lmbricks align rl`` job every policy of the experiment is trained with."""
    from lmbricks.align.config import RLJob

    return RLJob.model_validate({
        "policy": args.model, "prompts": "builtin:dialogue", "lora": {"rank": 8, "alpha": 16}, "algorithm": "rloo",
        "steps": args.rl_steps, "prompts_per_step": args.rl_prompts_per_step, "samples_per_prompt": args.rl_samples,
        "kl_coef": args.rl_kl, "sampling": {"max_new_tokens": args.rl_max_new_tokens or args.max_new_tokens},
        "optim": {"lr": args.rl_lr}, "precision": "bf16", "checkpoint_every": max(args.rl_steps, 1),
        "keep_checkpoints": 1, "seed": args.seed})  # fmt: skip


def step_logger(target: str, scorer: Any, k: int, records: list[dict[str, Any]]) -> Any:
    """An ``on_step`` that adds the gold reward of the step's samples and their sequence KL to ``records``."""

    def on_step(rec: dict[str, float]) -> None:
        gold = scorer.last["gold"].view(-1, k)  # (P, k)
        records.append({**rec, "gold": float(gold.mean()), "gold_per_prompt": gold.mean(1).tolist(),
                        "kl_seq": rec["kl"] * rec["sampled_tokens"] / gold.numel()})  # fmt: skip
        print(json.dumps({"target": target, **{k: v for k, v in records[-1].items() if k != "gold_per_prompt"}}),
              flush=True)  # fmt: skip

    return on_step


def train_policies(args: argparse.Namespace, rm: Any, tok: Any, start: int, tops: dict) -> dict[str, Any]:
    """RL of one policy per target; per step the proxy reward, the gold reward (judged, never optimised)
    and the sequence KL to the initial policy (k3 per token times tokens per response)."""
    from lmbricks.align.pipeline import run_rl
    from lmbricks.align.scorer import SharedTrunkScorer

    members = [f"m{m}" for m in range(args.members)]
    out: dict[str, Any] = {}
    for target in args.rl_targets.split(","):
        scorer = SharedTrunkScorer(rm, tok, start, tops, members if target == "ensemble" else [target])
        records: list[dict[str, Any]] = []
        on_step = step_logger(target, scorer, args.rl_samples, records)
        res = run_rl(rl_job(args), args.out / f"rl-{target}", force=True, on_step=on_step, scorer=scorer)
        out[target] = {"policy": str(res.policy), "records": records}
    return out


def held_out(args: argparse.Namespace, rm: Any, tok: Any, start: int, tops: dict, prompts: list[str],
             policies: dict[str, str | None]) -> dict[str, dict[str, torch.Tensor]]:  # fmt: skip
    """Each policy's samples of the held-out prompts: gold rewards (P, k) and sequence KL to the initial policy."""
    from lmbricks.align import SamplingConfig, sample_responses
    from lmbricks.align.logprob import sequence_logprobs
    from lmbricks.align.sample import encode_policy_prompts, load_policy
    from lmbricks.align.scorer import SharedTrunkScorer

    ref, ptok = load_policy(args.model, torch.bfloat16)
    ids = encode_policy_prompts(ptok, prompts, chat=True)
    cfg = SamplingConfig(max_new_tokens=args.rl_max_new_tokens or args.max_new_tokens, batch_size=64)
    scorer = SharedTrunkScorer(rm, tok, start, tops, ["gold"])
    out = {}
    for name, path in policies.items():
        model = ref if path is None else load_policy(path, torch.bfloat16)[0]
        s = sample_responses(model.eval(), ptok, ids, args.rl_samples, cfg, seed=args.seed + 1)
        gold = scorer([p for p in prompts for _ in range(args.rl_samples)], [t for ts in s.texts for t in ts])
        rows = [p for p in s.prompt_ids for _ in range(args.rl_samples)]
        resp = [r for rs in s.responses for r in rs]
        with torch.no_grad():
            kl = torch.cat([sequence_logprobs(model, rows[b : b + 16], resp[b : b + 16])
                            - sequence_logprobs(ref, rows[b : b + 16], resp[b : b + 16])
                            for b in range(0, len(rows), 16)])  # fmt: skip
        out[name] = {"gold": gold.view(len(prompts), -1).double(), "kl": kl.view(len(prompts), -1).double()}
    return out


def analyse_rl(args: argparse.Namespace, trained: dict[str, Any], evals: dict[str, dict[str, torch.Tensor]]) -> dict:
    """The RL curves (gold against KL, binned over steps), held-out figures and the head to head."""
    from lmbricks.align.overopt import bootstrap_mean_ci, win_rate

    curves = {}
    for target, t in trained.items():
        recs, pts = t["records"], []
        for b in range(0, len(recs), args.rl_bin):
            chunk = recs[b : b + args.rl_bin]
            per = torch.tensor([g for r in chunk for g in r["gold_per_prompt"]])
            pts.append({"steps": [chunk[0]["step"], chunk[-1]["step"]],
                        "kl": sum(r["kl_seq"] for r in chunk) / len(chunk), "gold": float(per.mean()),
                        "ci95": list(bootstrap_mean_ci(per)),
                        "proxy": sum(r["reward"] for r in chunk) / len(chunk)})  # fmt: skip
        curves[target] = pts
    held = {name: {"gold": float(e["gold"].mean()), "ci95": list(bootstrap_mean_ci(e["gold"].mean(1))),
                   "kl": float(e["kl"].mean())} for name, e in evals.items()}  # fmt: skip
    targets = list(trained)
    heads = {f"{a}_vs_{targets[0]}": win_rate(evals[a]["gold"].flatten(), evals[targets[0]]["gold"].flatten()).to_dict()
             for a in targets[1:]}  # fmt: skip
    peaks = {k: max(c, key=lambda e: e["gold"]) for k, c in curves.items()}
    return {"job": rl_job(args).model_dump(mode="json"), "curves": curves, "peaks": peaks, "held_out": held,
            "head_to_head_held_out": heads,
            "steps": {k: t["records"] for k, t in trained.items()}}  # fmt: skip


def _cell(e: dict) -> str:
    return f"{e['gold']:.2f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]"


def table_rows(res: dict) -> list[str]:
    """docs/alignment.md's tables from the JSON: best-of-n per n, and (when run) RL per curve point."""
    c = res["curves"]
    rows = [f"| {e['n']} | {e['kl']:.2f} | {_cell(e)} | {_cell(c['warm'][i])} | {_cell(c['ensemble'][i])} | "
            f"{_cell(c['gold'][i])} |" for i, e in enumerate(c["single_mean"])]  # fmt: skip
    for target, pts in res.get("rl", {}).get("curves", {}).items():
        rows += [f"| {target} | {e['steps'][0]}-{e['steps'][1]} | {e['kl']:.2f} | {e['proxy']:.2f} | {_cell(e)} |"
                 for e in pts]  # fmt: skip
    for name, e in res.get("rl", {}).get("held_out", {}).items():
        rows.append(f"| {name} | {e['kl']:.2f} | {_cell(e)} |")
    return rows


def plot(res: dict, path: Path) -> None:
    """Gold reward against KL: best-of-n (left) and, when run, RL along each policy's training (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rl = res.get("rl")
    fig, axes = plt.subplots(1, 2 if rl else 1, figsize=(11 if rl else 6.4, 4.2), squeeze=False, sharey=True)
    ax = axes[0][0]
    styles = {"warm": ("C0", "WARM (weight average)"), "ensemble": ("C2", "prediction ensemble"),
              "single_mean": ("C3", "single proxy (mean of members)"), "gold": ("k", "gold (oracle)")}  # fmt: skip
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
    ax.set_title("best-of-n against proxies (thin: each member)", fontsize=9)
    ax.legend(fontsize=8)
    if rl:
        ax = axes[0][1]
        for name, c in rl["curves"].items():
            col, label = styles.get(name, ("C3", f"single proxy ({name})"))
            kl = [e["kl"] for e in c]
            ax.plot(kl, [e["gold"] for e in c], color=col, marker="s", ms=3, label=f"RL vs {label}")
            ax.fill_between(kl, [e["ci95"][0] for e in c], [e["ci95"][1] for e in c], color=col, alpha=0.12)
            h = rl["held_out"][name]  # the final policy on the held-out prompts
            ax.errorbar([h["kl"]], [h["gold"]], yerr=[[h["gold"] - h["ci95"][0]], [h["ci95"][1] - h["gold"]]],
                        color=col, marker="*", ms=10, capsize=3)  # fmt: skip
        ax.plot([0.0], [rl["held_out"]["initial"]["gold"]], "k*", ms=10, label="initial policy (held out)")
        ax.set_xlabel("KL(RL policy || initial), nats per response (stars: held-out prompts)")
        ax.set_title(f"RLOO + LoRA, {rl['job']['steps']} steps, points of {res['setup']['rl_bin']} steps", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle("gold reward against KL, 95% bootstrap bands", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _portable(value: object) -> object:
    """A path as the record keeps it: relative to the working directory, or its name when outside it."""
    if not isinstance(value, Path) or not value.is_absolute():
        return value
    try:
        return str(value.relative_to(Path.cwd()))
    except ValueError:
        return value.name


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from lmbricks.reward.warm import base_reward_model

    args.out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.time(), time.process_time()
    rm, tok = base_reward_model(args.model)
    rm.eval()
    start = rm.num_layers - args.trainable_layers
    tops, info = cached_rms(args, rm, tok, start)
    c1 = time.process_time()
    if args.reuse_samples is not None:
        prompts, texts, tokens, sample_cpu = reused_samples(args)
    else:
        prompts, s, sample_cpu = sample(args)
        texts, tokens = s.texts, s.tokens
    (args.out / "samples.json").write_text(json.dumps({"prompts": prompts, "texts": texts}, indent=1))
    c2 = time.process_time()
    scores = score_all(rm, tok, start, tops, prompts, texts)
    c3 = time.process_time()
    rl = None
    if args.rl_steps > 0:
        trained = train_policies(args, rm, tok, start, tops)
        c4 = time.process_time()
        policies: dict[str, str | None] = {"initial": None, **{t: v["policy"] for t, v in trained.items()}}
        rl = analyse_rl(args, trained, held_out(args, rm, tok, start, tops, prompts, policies))
        rl["cpu_seconds"] = {"training": c4 - c3, "held_out": time.process_time() - c4}
    given = {k: _portable(v) for k, v in vars(args).items()}  # records carry no machine paths
    res = {"samples_reused_from": given["reuse_samples"],
           "command": "scripts/overoptimisation.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                              given.items() if v is not None),  # fmt: skip
           "model": args.model, "setup": {**{k: v for k, v in given.items() if k not in ("out", "json", "plot")},
           **info}, "prompts": len(prompts), "sampled_tokens": tokens,  # fmt: skip
           **analyse(scores, args.members, args.n_max), **({"rl": rl} if rl else {}),
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
