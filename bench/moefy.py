"""Benchmark: MoEfication of the default model (32 balanced experts per layer).

Measures, side by side on this machine:
- FFN forward time of one layer's MoEfied FFN (router mode, sparse runtime) at K = 8, 16, 32
  versus the dense FFN, prefill (batch 4 x 256 tokens) and decode (1 token);
- whole-model tokens/s at the same K versus the dense model (prefill 4 x 256 and decode);
- the average perplexity change over the five domains at 50% of experts with the oracle and with
  the learned router, then after healing (KL distillation towards the dense model) at 50% and 25%.

The conversion: balanced co-activation k-means refined for top-K capture, a router per layer
fitted to the experts' output norms (``linear``: closed-form ridge regression, the default;
``mlp``: trained), layers converted in order in one calibration pass. Healing trains the routers
and the experts (everything else frozen) for ``--heal-minutes``.

Prints JSON with ``heal_tokens`` (tokens seen while healing), ``ffn_speedup_25pct``,
``ffn_speedup_50pct``, ``model_speedup_25pct``,
``ppl_change_50pct_oracle``, ``ppl_change_50pct_router``, ``ppl_change_50pct_healed`` and
``ppl_change_25pct_healed`` (changes as fractions, 0.10 = +10%), plus the details (including the
wall and CPU seconds of every stage, since the 2 cores may be shared).

Usage:
    python bench/moefy.py                    # ~20 min on 2 quiet cores: 4 x 256 eval tokens/domain, 8 min healing
    python bench/moefy.py --heal-minutes 30  # the issue's healing budget
    python bench/moefy.py --quick            # ~6 min: 2 x 256 eval tokens/domain, 2 min healing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lmbricks.data.registry import DEFAULT_DOMAINS

DOMAINS = DEFAULT_DOMAINS


class Clock:
    """Wall and process-CPU seconds per stage (CPU time shows how much of the machine we had)."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._name = ""

    def start(self, name: str) -> None:
        self.stop()
        self._name, self._wall, self._cpu = name, time.perf_counter(), time.process_time()
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self._name:
            self.stages[self._name] = {
                "wall_s": round(time.perf_counter() - self._wall, 1),
                "cpu_s": round(time.process_time() - self._cpu, 1),
            }
            self._name = ""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--split", default="coactivation", choices=["kmeans", "coactivation", "random"])
    parser.add_argument("--router", default="linear", choices=["centroid", "linear", "mlp"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--heal-minutes", type=float, default=None, help="healing budget (default 8, quick 2)")
    parser.add_argument("--heal-lr", type=float, default=1e-4, help="learning rate of the experts")
    parser.add_argument("--calib-chunks", type=int, default=None, help="calibration blocks per domain")
    parser.add_argument("--calib-seq-len", type=int, default=512, help="tokens per calibration block")
    parser.add_argument("--eval-chunks", type=int, default=None, help="eval blocks per domain (override)")
    parser.add_argument("--eval-seq-len", type=int, default=256, help="tokens per eval block")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    import lmbricks

    lmbricks.tune_process()
    if args.threads:
        torch.set_num_threads(args.threads)

    from lmbricks.analysis import find_ffns
    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.hub import load_hf_model
    from lmbricks.moefy import make_config, moefied_layers, moefy_model, set_routing
    from lmbricks.moefy.evaluate import ppl_curve, time_ffn, time_model
    from lmbricks.moefy.heal import HealConfig, heal

    clock = Clock()
    e = args.experts
    k25, k50 = e // 4, e // 2
    heal_minutes = args.heal_minutes if args.heal_minutes is not None else (2.0 if args.quick else 8.0)
    calib_chunks = args.calib_chunks or (2 if args.quick else 4)
    eval_chunks = args.eval_chunks or (2 if args.quick else 4)

    clock.start("load")
    dense, tokenizer = load_hf_model(args.model)
    model, _ = load_hf_model(args.model)
    cfg = make_config(
        experts=e,
        top_k=k50,
        split=args.split,
        router=args.router,
        calib_chunks=calib_chunks,
        calib_seq_len=args.calib_seq_len,
        router_steps=150 if args.quick else 300,
    )
    clock.start("convert")
    info = moefy_model(model, tokenizer, cfg)
    evals = domain_chunks(tokenizer, DOMAINS, "test", eval_chunks, args.eval_seq_len)

    clock.start("ffn timing")
    blocks = find_ffns(dense)
    block = blocks[len(blocks) // 2]
    ffn = moefied_layers(model)[block.layer]
    ks = [k25, k50, e]
    prefill = time_ffn(block.module, ffn, block.hidden, ks, tokens=4 * 256)
    decode = time_ffn(block.module, ffn, block.hidden, ks, tokens=1, rounds=50)
    clock.start("model timing")
    whole = time_model(dense, model, ks, batch=4, rounds=2 if args.quick else 3)

    clock.start("perplexity: oracle and router")
    before = ppl_curve(model, evals, [k25, k50], ("oracle", "router"))
    healed_info: dict[str, Any] = {}
    after = None
    if heal_minutes > 0:
        clock.start("healing")
        train = domain_chunks(tokenizer, DOMAINS, "train", 16, 256)
        train_blocks = torch.cat(list(train.values()))
        train_blocks = train_blocks[torch.randperm(train_blocks.shape[0], generator=torch.Generator().manual_seed(0))]
        set_routing(model, mode="router", top_k=k50)
        stats = heal(model, dense, train_blocks, HealConfig(max_minutes=heal_minutes, lr=args.heal_lr))
        healed_info = {
            "steps": stats.steps,
            "tokens": stats.tokens,
            "minutes": stats.seconds / 60,
            "kl_first": stats.kl[0] if stats.kl else None,
            "kl_last_10_mean": sum(stats.kl[-10:]) / max(len(stats.kl[-10:]), 1) if stats.kl else None,
            "lr_experts": args.heal_lr,
        }
        clock.start("perplexity after healing")
        after = ppl_curve(model, evals, [k25, k50], ("router",))
    clock.stop()

    def change(result: Any, mode: str, k: int) -> float | None:
        if result is None:
            return None
        point = result.find(mode, k)
        return None if point is None else float(result.change(point))

    def per_domain(result: Any, mode: str, k: int) -> dict[str, float] | None:
        point = None if result is None else result.find(mode, k)
        if point is None:
            return None
        return {d: point.ppl[d] / result.dense_ppl[d] - 1.0 for d in point.ppl}

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import measure_machine

    out = {
        "heal_tokens": healed_info.get("tokens"),
        "ffn_speedup_25pct": prefill[f"K={k25}_speedup"],
        "ffn_speedup_50pct": prefill[f"K={k50}_speedup"],
        "model_speedup_25pct": whole[f"prefill_K={k25}_speedup"],
        "ppl_change_50pct_oracle": change(before, "oracle", k50),
        "ppl_change_50pct_router": change(before, "router", k50),
        "ppl_change_50pct_healed": change(after, "router", k50),
        "ppl_change_25pct_healed": change(after, "router", k25),
        "details": {
            "model": args.model,
            "experts": e,
            "split": args.split,
            "router": args.router,
            "calib_tokens": info.calib_tokens,
            "eval_tokens_per_domain": eval_chunks * args.eval_seq_len,
            "dense_ppl": before.dense_ppl,
            "calibration_oracle_mass_share_at_50pct": sum(info.oracle_share) / max(len(info.oracle_share), 1),
            "router_recall_at_50pct": sum(info.router_recall) / max(len(info.router_recall), 1),
            "ppl_change_25pct_oracle": change(before, "oracle", k25),
            "ppl_change_25pct_router": change(before, "router", k25),
            "per_domain_50pct": {
                "oracle": per_domain(before, "oracle", k50),
                "router": per_domain(before, "router", k50),
                "healed": per_domain(after, "router", k50),
            },
            "ffn_prefill": prefill,
            "ffn_decode": decode,
            "model_speed": whole,
            "healing": healed_info,
            "threads": torch.get_num_threads(),
            "stages": clock.stages,
            "machine_limits": measure_machine(((4 * 256, 576, 2 * 1536),), min_seconds=0.2),
        },
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
