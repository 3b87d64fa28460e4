"""Benchmark: MoEfication of the default model (32 balanced experts per layer).

Measures, side by side on this machine:
- FFN forward time of one layer's MoEfied FFN (router mode, sparse runtime) at K = 8, 16, 32
  versus the dense FFN, prefill (batch 4 x 256 tokens) and decode (1 token);
- whole-model tokens/s at the same K versus the dense model (prefill and decode);
- the average perplexity change over the five domains at 50% of experts with the oracle and with
  the learned router, then after healing (KL distillation towards the dense model) at 50% and 25%.

Prints JSON with ``ffn_speedup_25pct``, ``ffn_speedup_50pct``, ``model_speedup_25pct``,
``ppl_change_50pct_oracle``, ``ppl_change_50pct_router``, ``ppl_change_50pct_healed`` and
``ppl_change_25pct_healed`` (changes as fractions, 0.10 = +10%), plus the details.

Usage:
    python bench/moefy.py                  # full: 4 x 1024 eval tokens per domain, 30 min healing
    python bench/moefy.py --quick          # 4 x 256 eval tokens per domain, 3 min healing
    python bench/moefy.py --heal-minutes 0 # skip healing
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

DOMAINS = ("en_prose", "code", "math", "zh", "dialogue")


def main(argv: list[str] | None = None) -> dict:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--split", default="coactivation", choices=["kmeans", "coactivation", "random"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--heal-minutes", type=float, default=None)
    parser.add_argument("--eval-chunks", type=int, default=None, help="eval blocks per domain (override)")
    parser.add_argument("--eval-seq-len", type=int, default=None, help="tokens per eval block (override)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from lmbricks.analysis import find_ffns
    from lmbricks.analysis.corpus import FULL_BUDGET, QUICK_BUDGET, domain_chunks
    from lmbricks.hub import load_hf_model
    from lmbricks.moefy import make_config, moefied_layers, moefy_model, set_routing
    from lmbricks.moefy.evaluate import ppl_curve, time_ffn, time_model
    from lmbricks.moefy.heal import HealConfig, heal

    e = args.experts
    k25, k50 = e // 4, e // 2
    heal_minutes = args.heal_minutes if args.heal_minutes is not None else (3.0 if args.quick else 30.0)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    dense, tokenizer = load_hf_model(args.model)
    model, _ = load_hf_model(args.model)
    cfg = make_config(
        experts=e,
        top_k=k50,
        split=args.split,
        router="mlp",
        calib_chunks=4 if args.quick else 8,
        calib_seq_len=256 if args.quick else 512,
        router_steps=200 if args.quick else 400,
    )
    t0 = time.perf_counter()
    info = moefy_model(model, tokenizer, cfg, on_step=log)
    convert_s = time.perf_counter() - t0
    n, t = QUICK_BUDGET if args.quick else FULL_BUDGET
    n, t = args.eval_chunks or n, args.eval_seq_len or t
    evals = domain_chunks(tokenizer, DOMAINS, "test", n, t)

    log("timing the FFN")
    block = find_ffns(dense)[len(find_ffns(dense)) // 2]
    ffn = moefied_layers(model)[block.layer]
    ks = [k25, k50, e]
    prefill = time_ffn(block.module, ffn, block.hidden, ks, tokens=4 * 256)
    decode = time_ffn(block.module, ffn, block.hidden, ks, tokens=1, rounds=50)
    log("timing the model")
    batch = 1 if args.quick else 4  # quick: 1 x 256 prefill to save CPU; full: the 4 x 256 of the claim
    whole = time_model(dense, model, ks, batch=batch, rounds=2 if args.quick else 5)

    log("perplexity: oracle and router")
    before = ppl_curve(model, evals, [k25, k50], ("oracle", "router"), on_step=log)
    healed_info: dict = {}
    after = None
    if heal_minutes > 0:
        train = domain_chunks(tokenizer, DOMAINS, "train", 64, 256)
        blocks = torch.cat(list(train.values()))
        blocks = blocks[torch.randperm(blocks.shape[0], generator=torch.Generator().manual_seed(0))]
        set_routing(model, mode="router", top_k=k50)
        log(f"healing for {heal_minutes} min")
        stats = heal(model, dense, blocks, HealConfig(max_minutes=heal_minutes))
        healed_info = {
            "steps": stats.steps,
            "tokens": stats.tokens,
            "minutes": stats.seconds / 60,
            "kl_first": stats.kl[0],
            "kl_last": stats.kl[-1],
        }
        after = ppl_curve(model, evals, [k25, k50], ("router",), on_step=log)

    def change(result, mode: str, k: int) -> float | None:  # type: ignore[no-untyped-def]
        if result is None:
            return None
        point = result.find(mode, k)
        return None if point is None else result.change(point)

    out = {
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
            "eval_tokens_per_domain": n * t,
            "convert_seconds": convert_s,
            "calibration_oracle_share_at_50pct": sum(info.oracle_share) / max(len(info.oracle_share), 1),
            "ppl_change_25pct_oracle": change(before, "oracle", k25),
            "ppl_change_25pct_router": change(before, "router", k25),
            "ffn_prefill": prefill,
            "ffn_decode": decode,
            "model_speed": whole,
            "healing": healed_info,
            "threads": torch.get_num_threads(),
            "model_prefill_batch": batch,
        },
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
