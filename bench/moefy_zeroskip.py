"""Benchmark: zero-skipping of the MoEfied runtime on the default model with its activation swapped to ReLU.

The default model's SiLU gate is replaced by ReLU without training (about 65% of the gate
activations become exact zeros; its quality is irrelevant for a speed figure), then MoEfied
(32 balanced k-means experts, centroid router: no calibration pass; the FFN's inputs are
the layer's true inputs on 2 x 256 test tokens, repeated to 4 x 256). In one process, one
thread, CPU-time clock, the arms' order rotating every round, medians over rounds:
- one middle layer's FFN, prefill of 4 x 256 tokens and one-token decoding: the dense LlamaMLP
  against the MoEfied FFN at K = 8 and 16 of 32 (25% and 50% of experts), with and without
  zero-skipping, and at K = 32 with zero-skipping (every expert, only the zeros skipped);
- one-token decoding of the whole model (16 cached steps after a 32-token prompt) at K = 8, 16, 32,
  with and without zero-skipping, against the dense ReLU model.

Prints JSON: ``zero_fraction`` (exact zeros of the gate activations on the test text), the
per-arm medians in ms and the speedups against dense.

Usage:
    OMP_NUM_THREADS=1 python bench/moefy_zeroskip.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from torch import nn


def relu_swap(model: nn.Module) -> None:
    """Replace every FFN's gate activation by ReLU (in place, no training)."""
    from lmbricks.analysis import find_ffns

    for block in find_ffns(model):
        block.module.register_module("act_fn", nn.ReLU())  # LlamaMLP.act_fn is a module
    model.config.hidden_act = "relu"


def _cpu(fn: Any, reps: int) -> float:
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps


def _rotated(arms: dict[str, Any], rounds: int, reps: int) -> dict[str, float]:
    """Median CPU seconds per call of each arm, the order rotating every round."""
    names = list(arms)
    for fn in arms.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_cpu(arms[name], reps))
    return {n: statistics.median(t) for n, t in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its JSON."""
    import lmbricks

    lmbricks.tune_process()  # large buffers stay in the heap, as in every lmbricks process
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from lmbricks.analysis import find_ffns
    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.hub import load_hf_model
    from lmbricks.moefy import make_config, moefied_layers, moefy_model, set_routing
    from lmbricks.moefy.evaluate import greedy_decoder

    dense, tok = load_hf_model(args.model)
    relu_swap(dense)
    model, _ = load_hf_model(args.model)
    relu_swap(model)
    ids = torch.cat(list(domain_chunks(tok, ("en_prose", "code"), "test", 1, 256).values()))
    block = find_ffns(dense)[len(find_ffns(dense)) // 2]
    with torch.no_grad():
        zeros: list[float] = []
        seen: list[torch.Tensor] = []
        hooks = [block.module.register_forward_hook(lambda _m, a, _o: seen.append(a[0].reshape(-1, a[0].shape[-1])))]
        hooks += [b.gate.register_forward_hook(lambda _m, _a, o: zeros.append(float((o <= 0).float().mean())))
                 for b in find_ffns(dense) if b.gate is not None]  # fmt: skip
        dense(input_ids=ids)
        for h in hooks:
            h.remove()
    cfg = make_config(experts=32, top_k=16, split="kmeans", router="centroid")
    moefy_model(model, tok, cfg)
    ffn = moefied_layers(model)[block.layer]
    x = torch.cat([seen[0], seen[0]])  # (1024, H) the layer's true inputs on test text
    out: dict[str, Any] = {"zero_fraction": sum(zeros) / len(zeros), "clock": "process CPU time, 1 thread"}

    def ffn_arm(k: int, skip: bool, rows: torch.Tensor) -> Any:
        def run() -> None:
            ffn.top_k, ffn.skip_zeros = k, skip
            ffn(rows)

        return run

    with torch.no_grad():
        for phase, rows, reps in (("ffn_prefill", x, 3), ("ffn_decode", x[:1], 200)):
            arms: dict[str, Any] = {"dense": (lambda r=rows: block.module(r))}
            for k in (8, 16, 32):
                for skip in (False, True) if k < 32 else (True,):
                    arms[f"K={k}{'+zs' if skip else ''}"] = ffn_arm(k, skip, rows)
            med = _rotated(arms, args.rounds, reps)
            out[phase] = {f"{a}_ms": 1e3 * s for a, s in med.items()}
            out[phase] |= {f"{a}_speedup": med["dense"] / s for a, s in med.items() if a != "dense"}
        prompt = ids[:1, :32]
        arms = {"dense": greedy_decoder(dense, prompt, 16)}
        for k in (8, 16, 32):
            for skip in (False, True):

                def run(k: int = k, skip: bool = skip) -> None:
                    set_routing(model, mode="router", top_k=k, skip_zeros=skip)
                    greedy_decoder(model, prompt, 16)()

                arms[f"K={k}{'+zs' if skip else ''}"] = run
        med = _rotated(arms, args.rounds, 1)
        out["model_decode"] = {f"{a}_tok_s": 17 / s for a, s in med.items()}
        out["model_decode"] |= {f"{a}_speedup": med["dense"] / s for a, s in med.items() if a != "dense"}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
