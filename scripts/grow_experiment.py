"""The grow experiment of docs/grow.md: an MoE of the default model's four shipped bricks.

Measures per-domain perplexity (held-out test split) of: the base, each brick, a TIES merge of the
four bricks (``lmbricks merge`` with ``base+brick`` references), the MoE assembled with ``domain``
router initialisation (top-1 and top-2), and the same MoE after a short router-only training run
(``lmbricks train`` with ``trainable: [routers]`` on the mixed corpus). Also the per-domain routing
histogram of every MoE variant. Two MoE layouts: attention, embeddings and norms from the base
(mergekit-moe) and averaged over the four ``base + brick`` models (Branch-Train-MiX). Writes
``results.json`` and the figures into ``--docs`` and prints the markdown table.

The run is resumable: each evaluation, the merge, the assemblies and the training run are cached
under ``--out`` (keyed by their settings and the bricks' hashes), and with ``--max-minutes`` the
script stops between stages and says so; run it again to continue. Process CPU seconds are recorded
next to wall seconds (on a busy machine the wall time says little). Run from the repository root::

    nice -n 19 .venv/bin/python scripts/grow_experiment.py --max-minutes 14
    nice -n 19 .venv/bin/python scripts/grow_experiment.py --quick     # a smaller, faster version
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lmbricks.checkpoint import content_hash
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.grow import assemble, evaluate_routed, with_top_k
from lmbricks.grow.routing import DomainEval
from lmbricks.grow.sources import load_lm
from lmbricks.hub import DEFAULT_MODEL, load_tokenizer, resolve_model
from lmbricks.nn import load_model
from lmbricks.report import bar_chart, heatmap, line_chart

ROOT = Path(__file__).resolve().parents[1]
BRICKS = ROOT / "bricks" / DEFAULT_MODEL
BRICK_DOMAINS = ("code", "math", "zh", "dialogue")
DOMAINS = DEFAULT_DOMAINS
START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - START:6.0f}s] {msg}", flush=True)


def summarise(res: dict[str, DomainEval]) -> dict[str, Any]:
    """JSON of one model's evaluation: ppl, bpb, tokens and routing shares per domain."""
    out: dict[str, Any] = {}
    for d, e in res.items():
        row: dict[str, Any] = {"ppl": e.result.ppl, "bpb": e.result.bpb, "tokens": e.result.tokens}
        shares = e.shares()
        if shares is not None and e.counts is not None:
            row["expert_share"] = [round(x, 4) for x in shares.tolist()]
            c = e.counts.float()
            row["expert_share_per_layer"] = (c / c.sum(-1, keepdim=True).clamp_min(1)).round(decimals=3).tolist()
        out[d] = row
    return out


class Stages:
    """Resumable stages: results cached in ``out/cache.json``; a time budget checked between stages."""

    def __init__(self, out: Path, fingerprint: str, max_minutes: float | None) -> None:
        self.path = out / "cache.json"
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data: dict[str, Any] = data if data.get("fingerprint") == fingerprint else {"fingerprint": fingerprint}
        self.data.setdefault("models", {})
        self.data.setdefault("seconds", {})
        self.max_s = None if max_minutes is None else 60 * max_minutes

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")

    def budget(self) -> None:
        """Stop (cleanly, resumable) when the time budget of this invocation is spent."""
        if self.max_s is not None and time.perf_counter() - START > self.max_s:
            self.save()
            log("time budget spent; run the script again to continue from here")
            sys.exit(3)

    def timed(self, name: str, wall: float, cpu: float) -> None:
        self.data["seconds"][name] = {"wall": round(wall, 1), "cpu": round(cpu, 1)}
        self.save()


def evaluate(name: str, load: Any, tok: Any, args: argparse.Namespace, st: Stages) -> None:
    """Evaluate the model ``load()`` returns, unless this evaluation is cached."""
    if name in st.data["models"]:
        log(f"{name}: cached")
        return
    st.budget()
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate_routed(load(), tok, DOMAINS, args.eval_bytes)
    st.data["models"][name] = summarise(res)
    st.timed(f"eval {name}", time.perf_counter() - t0, time.process_time() - c0)
    log(f"{name}: " + ", ".join(f"{d} {r.result.ppl:.3f}" for d, r in res.items()))


def ties_merge(base: Path, out: Path, density: float) -> Path:
    """TIES of the four bricks' full updates, through ``lmbricks merge`` with path+adapter references."""
    from lmbricks.merge import merge

    recipe = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": f"{base}+{BRICKS / d}", "parameters": {"weight": 1.0, "density": density}} for d in BRICK_DOMAINS
        ],
        "parameters": {"normalize": True},
        "dtype": "float32",
        "out_dtype": "float32",
    }
    return merge(recipe, out, force=True, command="scripts/grow_experiment.py (ties)")


def train_routers(moe_dir: Path, run_dir: Path, args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]]:
    """Router-only training on the mixed corpus (all five domains), as ``lmbricks train`` runs it."""
    from lmbricks.train import parse_config, train
    from lmbricks.train.checkpoint import list_checkpoints

    cfg = parse_config(
        {
            "init_from": str(moe_dir),
            "trainable": ["routers"],
            "data": {"domains": list(DOMAINS), "seq_len": args.train_seq, "max_tokens": args.train_tokens},
            "steps": args.train_steps,
            "batch_size": args.train_batch,
            "optim": {"lr": args.lr, "weight_decay": 0.0},
            "schedule": {"kind": "constant", "warmup_steps": 2},
            "moe_loss": {"aux_loss_coef": args.aux_coef, "z_loss_coef": 1e-3},
            "checkpoint_every": args.train_steps,
            "keep_checkpoints": 1,
            "seed": 0,
            "threads": torch.get_num_threads(),
        },
        "grow experiment",
    )
    done = list_checkpoints(run_dir)
    if done and done[-1][0] == args.train_steps and (run_dir / "config.yaml").read_text() == _yaml(cfg):
        log("router training: cached")
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        return done[-1][1], records
    result = train(cfg, run_dir, force=True, report=False)
    assert result.final_checkpoint is not None
    return result.final_checkpoint, result.records


def _yaml(cfg: Any) -> str:
    import yaml

    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)


def assembled(recipe: dict[str, Any], out: Path, st: Stages) -> Path:
    """``lmbricks moe assemble`` of ``recipe`` into ``out`` (reused when it holds that recipe)."""
    from lmbricks.grow import parse_moe_recipe

    record = out / "lmbricks.json"
    if record.exists() and json.loads(record.read_text()).get("recipe") == parse_moe_recipe(recipe).to_dict():
        log(f"{out.name}: cached")
        return out
    st.budget()
    t0, c0 = time.perf_counter(), time.process_time()
    path = assemble(recipe, out, force=True, log=log, command="scripts/grow_experiment.py")
    st.timed(f"assemble {out.name}", time.perf_counter() - t0, time.process_time() - c0)
    return path


def ratio_table(results: dict[str, Any], names: list[str]) -> list[str]:
    """Markdown rows: perplexity per domain, change versus the base in brackets, mean bpb."""
    base = results["models"]["base"]
    lines = [
        "| model | " + " | ".join(DOMAINS) + " | mean bpb |",
        "|---|" + "---|" * (len(DOMAINS) + 1),
    ]
    for n in names:
        m = results["models"][n]
        cells = []
        for d in DOMAINS:
            ppl = m[d]["ppl"]
            cells.append(f"{ppl:.3f}" if n == "base" else f"{ppl:.3f} ({ppl / base[d]['ppl'] - 1:+.1%})")
        mean_bpb = sum(m[d]["bpb"] for d in DOMAINS) / len(DOMAINS)
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {mean_bpb:.4f} |")
    return lines


def targets(results: dict[str, Any], moe_names: list[str]) -> dict[str, Any]:
    """The issue's two targets, measured for each MoE variant."""
    models = results["models"]
    bricks = [f"+{d}" for d in BRICK_DOMAINS]
    best = {d: min(models[b][d]["ppl"] for b in bricks) for d in DOMAINS}
    best_name = {d: min(bricks, key=lambda b: models[b][d]["ppl"]) for d in DOMAINS}
    ties_bpb = sum(models["ties"][d]["bpb"] for d in DOMAINS) / len(DOMAINS)
    out: dict[str, Any] = {"best_brick": {d: {"brick": best_name[d], "ppl": best[d]} for d in DOMAINS}}
    for n in moe_names:
        gap = {d: models[n][d]["ppl"] / best[d] - 1 for d in DOMAINS}
        bpb = sum(models[n][d]["bpb"] for d in DOMAINS) / len(DOMAINS)
        out[n] = {
            "gap_to_best_brick": gap,
            "within_2pct_everywhere": all(g <= 0.02 for g in gap.values()),
            "domains_within_2pct": sum(g <= 0.02 for g in gap.values()),
            "mean_bpb": bpb,
            "beats_ties_on_average": bpb < ties_bpb,
            "ties_mean_bpb": ties_bpb,
        }
    return out


def slug(name: str) -> str:
    """A file-name-safe form of a model name: ``MoE top-2 (trained routers)`` -> ``moe-top-2-trained-routers``."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def figures(results: dict[str, Any], moe_names: list[str], docs: Path) -> list[str]:
    models = results["models"]
    base = models["base"]
    change = {}
    for n in ["ties", "best brick"] + moe_names:
        if n == "best brick":
            best = results["targets"]["best_brick"]
            change[n] = {d: 100 * (best[d]["ppl"] / base[d]["ppl"] - 1) for d in DOMAINS}
        else:
            change[n] = {d: 100 * (models[n][d]["ppl"] / base[d]["ppl"] - 1) for d in DOMAINS}
    pngs = [str(bar_chart(docs / "ppl_change.png", change, "Perplexity change versus the base", "% (lower is better)"))]
    for n in [m for m in moe_names if "base attn" not in m and m != "MoE top-2 (domain init)"]:
        matrix = [models[n][d]["expert_share"] for d in DOMAINS]
        pngs.append(
            str(
                heatmap(
                    docs / f"routing_{slug(n)}.png",
                    matrix,
                    list(DOMAINS),
                    [f"{e}:{d}" for e, d in enumerate(BRICK_DOMAINS)],
                    f"Routing share, {n.removeprefix('MoE ')}",
                    fmt="{:.2f}",
                )
            )
        )
    recs = results["router_training"]["log"]
    if recs:
        steps = [r["step"] for r in recs]
        pngs.append(
            str(
                line_chart(
                    docs / "router_training.png",
                    {
                        "LM loss": (steps, [r["loss"] for r in recs]),
                        "switch loss - 1": (steps, [r.get("aux", {}).get("switch", math.nan) - 1 for r in recs]),
                    },
                    "Router-only training on the mixed corpus",
                    "step",
                    "loss",
                )
            )
        )
    return pngs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "grow-experiment", help="work directory")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "grow", help="figures and results.json")
    p.add_argument("--eval-bytes", type=int, default=3000, help="held-out bytes per domain")
    p.add_argument("--domain-tokens", type=int, default=1024, help="tokens per domain for the router rows")
    p.add_argument("--ties-density", type=float, default=0.5)
    p.add_argument("--train-steps", type=int, default=16)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-seq", type=int, default=128)
    p.add_argument("--train-tokens", type=int, default=8192, help="training tokens taken per domain")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--aux-coef", type=float, default=1e-2)
    p.add_argument("--max-minutes", type=float, default=None, help="stop between stages after this long")
    p.add_argument("--quick", action="store_true", help="1,500 eval bytes, 512 domain tokens, 8 steps")
    args = p.parse_args()
    if args.quick:
        args.eval_bytes, args.domain_tokens, args.train_steps = 1500, 512, 8
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    base_path = resolve_model(DEFAULT_MODEL)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "max_minutes"}
    bricks = {d: content_hash(BRICKS / d)[:16] for d in BRICK_DOMAINS}
    fingerprint = hashlib.sha256(json.dumps([settings, bricks], sort_keys=True).encode()).hexdigest()[:16]
    st = Stages(args.out, fingerprint, args.max_minutes)
    log(f"base {base_path}, {torch.get_num_threads()} threads, cache {st.path} ({len(st.data['models'])} done)")
    tok = load_tokenizer(base_path)
    evaluate("base", lambda: load_model(base_path)[0], tok, args, st)
    for d in BRICK_DOMAINS:
        evaluate(f"+{d}", lambda d=d: load_lm(f"{base_path}+{BRICKS / d}")[0], tok, args, st)
    ties_dir = args.out / "ties"
    if "ties" not in st.data["models"]:
        st.budget()
        t0, c0 = time.perf_counter(), time.process_time()
        ties_merge(base_path, ties_dir, args.ties_density)
        st.timed("ties merge", time.perf_counter() - t0, time.process_time() - c0)
    evaluate("ties", lambda: load_model(ties_dir)[0], tok, args, st)

    def recipe(non_experts: str) -> dict[str, Any]:
        return {
            "base_model": str(base_path),
            "gate_mode": "domain",
            "experts_per_token": 2,
            "domain_tokens": args.domain_tokens,
            "non_experts": non_experts,
            "dtype": "float32",
            "experts": [{"brick": str(BRICKS / d), "domain": d} for d in BRICK_DOMAINS],
        }

    base_moe = assembled(recipe("base"), args.out / "moe-base-attn", st)
    evaluate("MoE top-2, base attn (domain init)", lambda: load_model(base_moe)[0], tok, args, st)
    btx = assembled(recipe("average"), args.out / "moe-btx", st)
    evaluate("MoE top-2 (domain init)", lambda: load_model(btx)[0], tok, args, st)
    evaluate("MoE top-1 (domain init)", lambda: with_top_k(load_model(btx)[0], 1), tok, args, st)
    st.budget()
    t0, c0 = time.perf_counter(), time.process_time()
    log(f"router training: {args.train_steps} steps x {args.train_batch} x {args.train_seq} tokens")
    ckpt, records = train_routers(btx, args.out / "router-run", args)
    if "router training" not in st.data["seconds"]:
        st.timed("router training", time.perf_counter() - t0, time.process_time() - c0)
    evaluate("MoE top-2 (trained routers)", lambda: load_model(ckpt)[0], tok, args, st)
    evaluate("MoE top-1 (trained routers)", lambda: with_top_k(load_model(ckpt)[0], 1), tok, args, st)

    results: dict[str, Any] = {
        "settings": settings,
        "bricks": bricks,
        "models": st.data["models"],
        "seconds": st.data["seconds"],
        "threads": torch.get_num_threads(),
        "recipe": recipe("average"),
        "router_training": {
            "log": [
                {k: r[k] for k in ("step", "loss", "aux", "expert_load_max_over_mean", "tokens_per_s") if k in r}
                for r in records
            ]
        },
    }
    moe_names = [n for n in results["models"] if n.startswith("MoE")]
    results["targets"] = targets(results, moe_names)
    results["figures"] = [
        str(Path(f).relative_to(ROOT)) if Path(f).is_relative_to(ROOT) else f
        for f in figures(results, moe_names, args.docs)
    ]
    total = {k: sum(v[k] for v in results["seconds"].values()) for k in ("wall", "cpu")}
    results["seconds_total"] = {k: round(v, 1) for k, v in total.items()}
    (args.docs / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    names = ["base"] + [f"+{d}" for d in BRICK_DOMAINS] + ["ties"] + moe_names
    print("\n".join(ratio_table(results, names)))
    for n in moe_names:
        t = results["targets"][n]
        print(
            f"{n}: within 2% of the best brick on {t['domains_within_2pct']}/5 domains; "
            f"mean bpb {t['mean_bpb']:.4f} vs TIES {t['ties_mean_bpb']:.4f}"
        )
    log(f"done: stages took {total['wall']:.0f} s wall, {total['cpu']:.0f} s CPU")


if __name__ == "__main__":
    main()
