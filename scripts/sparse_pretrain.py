"""Sparse pre-training at small scale: SwiGLU vs ReGLU vs ReLU^2 FFNs, same everything else (issue #18).

After ReLU^2 Wins (arXiv 2402.03804) and "Exploring the benefit of activation sparsity in
pre-training" (arXiv 2410.03440): three small LMs with the default model's tokenizer, the same
parameter count (all three FFNs are gated: ``down(act(gate x) * up x)``), the same packed training
blocks in the same order, the same schedule and seed, trained by ``lmbricks train`` (the configs are
written to ``OUT/configs/<arm>.yaml``; the committed copies are ``scripts/configs/sparse-pretrain/``).
Then, for each final model (loaded from its Hugging Face checkpoint with transformers):

- validation loss per domain (nats per token and bits per byte of the held-out text);
- activation sparsity: the share of exact zeros of the FFN intermediate activation, and the share
  below small magnitudes (what a threshold would skip on SwiGLU, whose activations are never zero);
- the per-token masking curve (``lmbricks analyze sparsity``'s code: the lowest 50/70/80/90% of
  neurons per token by the norm metric are zeroed);
- capability neurons (``lmbricks analyze neurons``: own-domain vs other-domain damage);
- MoEfication (``lmbricks moefy``) at 50% and 25% of the experts, without healing.

Every figure, the configs, tokens and CPU seconds go to one JSON file; the loss and masking curves
to PNGs. Each arm's training and analysis are kept under ``OUT`` and skipped when present (rerun
with ``--fresh`` to redo them).

Usage (one thread; about 8 minutes per arm at 200 steps on a busy CPU)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sparse_pretrain.py --out runs/sparse_pretrain \\
        --json docs/bench/sparse-pretrain-2026-12-07.json --img docs/img
    .venv/bin/python scripts/sparse_pretrain.py --tiny --out /tmp/sp-smoke   # the smoke test (~100 CPU s)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sparse_pretrain_eval import analyse_arm, plot_results, table_rows  # noqa: E402

ACTIVATIONS: tuple[str, ...] = ("swiglu", "reglu", "relu2")
TOKENIZER = "smollm2-135m-instruct"
#: ``--tiny``: what the smoke test runs (every piece, tiny models, few tokens).
TINY: dict[str, Any] = dict(steps=4, evals=2, hidden=64, layers=2, intermediate=128, seq_len=64, batch_size=2,
                            tokens_per_domain=4000, val_blocks=2, moefy_experts=4, analysis_seq=64)  # fmt: skip


def model_config(activation: str, hidden: int, layers: int, intermediate: int) -> dict[str, Any]:
    """The ``lmbricks.nn.LMConfig`` mapping of one arm: only the FFN activation differs."""
    model: dict[str, Any] = {
        "hidden_size": hidden,
        "num_layers": layers,
        "num_heads": max(1, hidden // 64),
        "intermediate_size": intermediate,
        "tie_embeddings": True,
    }
    if activation != "swiglu":  # swiglu is LMConfig's default
        model["activation"] = activation
    return model


def train_config(args: argparse.Namespace, activation: str) -> dict[str, Any]:
    """The ``lmbricks train`` mapping of one arm (a checkpoint every ``steps // evals`` steps, all kept)."""
    from lmbricks.train.arms import arm_train_config

    every = max(1, args.steps // args.evals)
    mapping = arm_train_config(
        model_config(activation, args.hidden, args.layers, args.intermediate),
        tokenizer=args.tokenizer,
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        eval_every=every,
        max_tokens_per_domain=args.tokens_per_domain,
        domains=args.domains,
        seed=args.seed,
    )
    mapping.pop("moe_loss")
    mapping["precision"] = args.precision
    mapping["threads"] = args.threads
    return mapping


def train_arm(args: argparse.Namespace, activation: str, chunks: torch.Tensor, tok: Any, val: Any) -> dict[str, Any]:
    """Train one arm (skipped if its ``train.json`` exists) and score its checkpoints on ``val``."""
    from lmbricks.train import load_config
    from lmbricks.train.arms import run_arm

    done = args.out / activation / "train.json"
    if done.exists() and not args.fresh:
        return dict(json.loads(done.read_text()))
    path = args.out / "configs" / f"{activation}.yaml"
    path.write_text(yaml.safe_dump(train_config(args, activation), sort_keys=False))
    cpu0 = time.process_time()
    result = run_arm(load_config(path), args.out / activation / "run", val, chunks=chunks, tokenizer=tok)
    result["train_cpu_seconds"] = round(time.process_time() - cpu0, 1)
    result["config"] = yaml.safe_load(path.read_text())
    done.write_text(json.dumps(result))
    print(f"{activation}: {result['tokens']} tokens, val {result['val_curve'][-1][1]['mean']:.4f}", flush=True)
    return result


def arm_at_step(args: argparse.Namespace, activation: str, val: Any) -> dict[str, Any]:
    """An arm's record from its checkpoints up to ``--at-step`` (a run cut short, or an earlier point).

    Arms with the same ``steps`` follow the same learning-rate schedule, so their checkpoints at one
    step have seen the same tokens under the same schedule: an equal-compute comparison.
    """
    from lmbricks.train.arms import load_weights, validation_losses
    from lmbricks.train.checkpoint import list_checkpoints
    from lmbricks.train.plan import count_parameters

    run = args.out / activation / "run"
    points = [(s, p) for s, p in list_checkpoints(run) if s <= args.at_step]
    if not points or points[-1][0] != args.at_step:
        raise SystemExit(f"{run}: no checkpoint at step {args.at_step} (have {[s for s, _ in list_checkpoints(run)]})")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    log = [r for r in log if "loss" in r and r.get("step", 0) <= args.at_step]
    return {
        "tokens": args.at_step * args.batch_size * args.seq_len,
        "train_curve": [[r["step"], r["loss"]] for r in log],
        "tokens_per_s": sorted(r["tokens_per_s"] for r in log)[len(log) // 2],
        "params": count_parameters(load_weights(points[-1][1]).cfg).to_dict(),
        "val_curve": [[s, validation_losses(load_weights(p), val)] for s, p in points],
        "config": yaml.safe_load((args.out / "configs" / f"{activation}.yaml").read_text()),
        "at_step": args.at_step,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/sparse_pretrain"))
    ap.add_argument("--json", type=Path, default=None, help="where the summary JSON goes (default OUT/results.json)")
    ap.add_argument("--img", type=Path, default=None, help="where the PNGs go (default OUT)")
    ap.add_argument("--arms", nargs="+", default=list(ACTIVATIONS), choices=ACTIVATIONS)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--evals", type=int, default=5, help="validation points per arm")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--tokens-per-domain", type=int, default=200_000)
    ap.add_argument("--domains", nargs="+", default=None, help="default: the corpus' default domains")
    ap.add_argument("--val-blocks", type=int, default=4, help="validation blocks per domain")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", default=TOKENIZER)
    ap.add_argument("--analysis-blocks", type=int, default=2, help="test blocks per domain of the analyses")
    ap.add_argument("--analysis-seq", type=int, default=128, help="tokens per block of the analyses")
    ap.add_argument("--neuron-domains", nargs="+", default=["en_prose", "code", "math"])
    ap.add_argument("--moefy-experts", type=int, default=16, help="experts per FFN for MoEfication")
    ap.add_argument("--skip-moefy", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="redo arms whose results exist")
    ap.add_argument("--at-step", type=int, default=None, help="analyse the checkpoints of this step")
    ap.add_argument("--tiny", action="store_true", help="a smoke run (tiny models, few tokens)")
    ap.add_argument("--train-only", action="store_true", help="train the arms, write no analysis")
    args = ap.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)
    if args.domains is None:
        from lmbricks.data.registry import DEFAULT_DOMAINS

        args.domains = list(DEFAULT_DOMAINS)
    args.json = args.json or args.out / "results.json"
    args.img = args.img or args.out
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train and analyse the arms; write the JSON and the plots. Returns the JSON's content."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from lmbricks.train import parse_config
    from lmbricks.train.arms import validation_blocks
    from lmbricks.train.data import build_chunks
    from lmbricks.train.setup import load_tokenizer

    start, cpu0 = time.perf_counter(), time.process_time()
    (args.out / "configs").mkdir(parents=True, exist_ok=True)
    for act in args.arms:
        (args.out / act).mkdir(exist_ok=True)
    tok = load_tokenizer(args.tokenizer)
    first = parse_config(train_config(args, args.arms[0]))
    assert first.data is not None
    chunks = build_chunks(first.data, tok) if args.at_step is None else torch.zeros(0)  # (N, T): one order for all
    val = validation_blocks(tok, args.domains, args.seq_len, args.val_blocks)
    print(f"{len(chunks)} training blocks of {args.seq_len}; validation {[len(v) for v in val.values()]}", flush=True)
    arms: dict[str, Any] = {}
    for act in args.arms:
        arms[act] = train_arm(args, act, chunks, tok, val) if args.at_step is None else arm_at_step(args, act, val)
    if args.train_only:
        return arms
    for act in args.arms:
        arms[act]["analysis"] = analyse_arm(args, act, tok, val, arms[act]["val_curve"])
    settings = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out", "json", "img")
    }
    summary = {
        "settings": settings,
        "training_blocks": len(chunks),
        "arms": arms,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    plot_results(summary, args.img)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print("\n".join(table_rows(summary)))
    return summary


if __name__ == "__main__":
    main()
