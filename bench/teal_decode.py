"""Benchmark: TEAL's one-token decoding of the whole model with its sparse kernel, against dense.

The default model (lmbricks' LM, bf16 and fp32 weights), batch 1, a KV cache: a prompt of
``--prompt-tokens`` test tokens (not timed), then ``--steps`` greedy one-token steps, each timed
by the process's CPU time. The arms, side by side in one process, their order rotating every
round, medians over every step of every round:

- ``dense``: the model's own projections (torch's GEMV);
- ``masked keep=f``: TEAL's masks in front of the dense products (``Teal``: what
  ``sparsify evaluate --method teal`` measured the quality of), which saves nothing;
- ``keep=1``: the sparse kernel with threshold 0 (every nonzero entry kept): the kernel's own
  speed, without sparsity;
- ``keep=f``: the kernel at TEAL's thresholds for sparsity 1 - f (``TealDecode``).

The thresholds are calibrated here (``--calibration-tokens`` train tokens per domain), or read from
``--thresholds``: a ``sparsify evaluate --method teal`` results.json (or a docs/bench JSON that
wraps one under ``"results"``), whose perplexity changes are then reported beside the speed.

The floor (bench/machine.py, measured first by the CPU clock, one thread): the weight bytes one
step reads over the stream bandwidth; a sparse arm reads the kept fraction of each thresholded
projection's bytes (measured per projection during its steps) and the dense rest (the LM head).

Prints JSON: per precision and arm ``step_ms``, ``tok_s``, ``speedup`` (against dense),
``speedup_vs_kernel`` (against ``keep=1``), ``decode_sparsity`` (input entries the kernel skipped),
``floor_ms``, ``vs_floor``, ``ppl_change_mean`` (from ``--thresholds``); the machine's limits; the
paper's figures (TEAL, arXiv 2408.14690: 1.53x at 40% and 1.8x at 50% sparsity).

Usage:
    OMP_NUM_THREADS=1 python bench/teal_decode.py --thresholds docs/bench/teal-2026-12-07.json --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: TEAL's reported wall-clock decoding speedups with its kernel (arXiv 2408.14690), by kept fraction.
PAPER_SPEEDUP = {"keep=0.6": 1.53, "keep=0.5": 1.8}


def arm_session(model: nn.Module, arm: str, thresholds: dict[str, list[float]], transposed: list[Tensor]) -> Any:
    """The context of one arm: ``dense``, ``masked keep=f``, ``keep=1`` or ``keep=f`` (module docstring)."""
    from contextlib import nullcontext

    from lmbricks.sparsify.teal import Teal, teal_sites
    from lmbricks.sparsify.teal_decode import TealDecode

    if arm == "dense":
        return nullcontext()
    if arm.startswith("masked "):
        return Teal(model, thresholds[arm.removeprefix("masked ")])
    t = [0.0] * len(teal_sites(model)) if arm == "keep=1" else thresholds[arm]
    return TealDecode(model, t, transposed)


@torch.no_grad()
def decode_steps(model: nn.Module, prompt: Tensor, steps: int, session: Any) -> tuple[list[float], dict[str, Any]]:
    """CPU seconds of each of ``steps`` greedy steps after ``prompt`` (1, P) inside ``session``; what it read."""
    from lmbricks.nn.model import KVCache
    from lmbricks.sparsify.teal_decode import TealDecode

    cache = KVCache(model.cfg.num_layers)
    times: list[float] = []
    with session as s:
        nxt = model(prompt, cache=cache).logits[:, -1:].argmax(-1)  # (1, 1)
        if isinstance(s, TealDecode):
            for m in s.layers:
                m.kept = m.seen = 0  # count the steps only, not the prompt
        for _ in range(steps):
            c = time.process_time()
            nxt = model(nxt, cache=cache).logits[:, -1:].argmax(-1)
            times.append(time.process_time() - c)
        read = step_bytes(model, s if isinstance(s, TealDecode) else None)
    return times, read


def step_bytes(model: nn.Module, session: Any) -> dict[str, Any]:
    """Weight bytes one decoding step reads: every matrix once (the embedding's one row aside), the
    thresholded projections only at the fraction of their inputs the kernel kept (``session``)."""
    head, embed = model.lm_head.weight, model.embed.weight
    mats = [p for p in model.parameters() if p.dim() == 2 and p is not head and p is not embed]
    total = sum(p.numel() * p.element_size() for p in [*mats, head])  # tied or not, the head reads all of it
    if session is None:
        return {"bytes": total, "kept": 1.0}
    for m in session.layers:
        full = m.wt.numel() * m.wt.element_size()
        total -= full - full * m.kept / max(1, m.seen)
    return {"bytes": int(total), "kept": session.kept_fraction()}


def measure(model: nn.Module, prompt: Tensor, thresholds: dict[str, list[float]], steps: int, rounds: int) -> dict:
    """Per arm: median step CPU seconds over ``rounds`` rotated rounds, and the bytes a step read."""
    from lmbricks.sparsify.teal_decode import transposed_weights

    transposed = transposed_weights(model)
    sparsest = min(thresholds, key=lambda a: float(a.removeprefix("keep=")))
    arms = ["dense", f"masked {sparsest}", "keep=1", *thresholds]
    decode_steps(model, prompt, 2, arm_session(model, "keep=1", thresholds, transposed))  # compile the kernel
    times: dict[str, list[float]] = {a: [] for a in arms}
    read: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    for r in range(rounds):
        for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
            t, b = decode_steps(model, prompt, steps, arm_session(model, arm, thresholds, transposed))
            times[arm] += t
            read[arm].append(b)
    return {a: {"step_s": statistics.median(times[a]), "read": read[a][-1]} for a in arms}


def summarise(measured: dict[str, dict], bandwidth_gbs: float, ppl: dict[str, float]) -> dict[str, dict]:
    """The JSON of one precision: per arm ms, tok/s, speedups, decode sparsity, floor and quality."""
    dense, kernel = measured["dense"]["step_s"], measured["keep=1"]["step_s"]
    out = {}
    for arm, m in measured.items():
        floor = m["read"]["bytes"] / (bandwidth_gbs * 1e9)
        out[arm] = {
            "step_ms": round(1e3 * m["step_s"], 3),
            "tok_s": round(1.0 / m["step_s"], 2),
            "speedup": round(dense / m["step_s"], 3),
            "speedup_vs_kernel": round(kernel / m["step_s"], 3),
            "decode_sparsity": round(1.0 - m["read"]["kept"], 4),
            "weight_mb": round(m["read"]["bytes"] / 1e6, 1),
            "floor_ms": round(1e3 * floor, 3),
            "vs_floor": round(m["step_s"] / floor, 3),
            "ppl_change_mean": ppl.get(arm.removeprefix("masked ")),
        }
    return out


def read_thresholds(path: Path) -> tuple[dict[str, list[float]], dict[str, float]]:
    """TEAL's thresholds and mean perplexity changes, by arm, from a ``sparsify evaluate`` results JSON."""
    data = json.loads(Path(path).read_text())
    res = data.get("results", data)
    if res.get("settings", {}).get("method") != "teal":
        raise SystemExit(f"--thresholds {path}: not a sparsify evaluate --method teal result")
    return res["thresholds"], {a: c["mean"] for a, c in res["ppl_change"].items()}


def calibrated(model: nn.Module, tok: Any, keeps: list[float], tokens: int) -> dict[str, list[float]]:
    """TEAL's thresholds per kept fraction, on ``tokens`` train tokens of each domain."""
    from lmbricks.data.corpus import domain_text
    from lmbricks.sparsify.teal import calibrate_teal

    rows = []
    for d in ("en_prose", "code", "math", "zh", "dialogue"):
        ids = torch.tensor(tok.encode(domain_text(d, "train", max_bytes=8 * tokens))[:tokens])
        rows.append(ids[: ids.numel() // 256 * 256].view(-1, 256))
    blocks = torch.cat(rows)  # (B, 256)
    return {f"keep={k:g}": calibrate_teal(model, blocks, 1.0 - k) for k in keeps}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its JSON."""
    import lmbricks

    lmbricks.tune_process()  # large buffers stay in the heap, as in every lmbricks process
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--precision", action="append", choices=["bf16", "fp32"], help="repeatable (default: both)")
    ap.add_argument("--keep", type=float, action="append", help="kept fractions (default 0.75, 0.6, 0.5)")
    ap.add_argument("--thresholds", type=Path, help="a sparsify evaluate --method teal results JSON")
    ap.add_argument("--calibration-tokens", type=int, default=1024)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from machine import measure_machine

    from lmbricks.data.corpus import domain_text
    from lmbricks.nn.load import load_model

    machine = measure_machine([(64, 576, 1536)], "cpu", 0.3, "cpu")
    out: dict[str, Any] = {"clock": "process CPU time, 1 thread", "machine": machine, "paper_speedup": PAPER_SPEEDUP}
    fixed, ppl = read_thresholds(args.thresholds) if args.thresholds else (None, {})
    for precision in args.precision or ["bf16", "fp32"]:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model, tok = load_model(args.model, dtype=dtype, hf_fallback=False)
        model.eval()
        prompt = torch.tensor(tok.encode(domain_text("en_prose", "test", max_bytes=4096))[: args.prompt_tokens])[None]
        thresholds = fixed or calibrated(model, tok, args.keep or [0.75, 0.6, 0.5], args.calibration_tokens)
        measured = measure(model, prompt, thresholds, args.steps, args.rounds)
        out[precision] = summarise(measured, machine["bandwidth_gbs"], ppl)
        del model
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
