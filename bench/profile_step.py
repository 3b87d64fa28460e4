"""Profile: where a training step's time goes, for lmbricks and transformers, bf16 and fp32.

bench/train_lm.py's step (the same model, data and AdamW; ``--quick``: its small model) runs in a
fresh process per (side, precision) (bench/harness.py), two warm-up steps, then ``--steps`` steps
under ``torch.profiler`` (CPU activities). Each operator's *self* CPU time goes to one category,
by its own name or an enclosing one's (the profiler's parent chain):

- ``optimizer``: anything under ``Optimizer.step`` (AdamW) or ``Optimizer.zero_grad``;
- ``attention``: ``scaled_dot_product_attention`` and its kernels, forward and backward; the forward
  of lmbricks' ``short_causal_attention`` (its backward nodes, bmm and softmax, are not told apart
  and count as ``matmul`` and ``other``);
- ``matmul``: ``mm``, ``addmm``, ``bmm`` and their variants anywhere else (lmbricks' fused
  head + loss included: its head products count here, as transformers' head does);
- ``norm``: lmbricks' ``_RMSNorm`` function and its backward; of transformers' RMSNorm the pow,
  mean and rsqrt and their backward nodes (its two multiplications are not told apart from others
  and count as ``other``: transformers' norm share is a lower bound);
- ``loss``: cross-entropy, log-softmax, NLL, lmbricks' ``_LinearCrossEntropy`` (forward and backward);
- ``other``: the rest (elementwise, SiLU, embedding, copies, autocast casts).

Beside them, measured without the profiler over the same steps: the step's wall time, its minor
page faults and system CPU time (``resource.getrusage``: the kernel's time, where allocator faults
are paid). Prints a table per run to stderr and one JSON object to stdout.

Usage: python bench/profile_step.py [--quick] [--steps N] [--threads N] [--precision bf16,fp32] [--top N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: its helper modules
from train_lm import SIDES, build_step  # noqa: E402

CATEGORIES = ("matmul", "attention", "norm", "optimizer", "loss", "other")
#: (category, name fragments of an operator or of one enclosing it); checked in this order, after
#: which a matrix product (:data:`_MATMUL`, by its own name) is ``matmul`` even inside a norm or loss.
_BEFORE_MATMUL = (
    ("optimizer", ("Optimizer.step", "Optimizer.zero_grad")),
    ("attention", ("scaled_dot_product", "flash_attention", "FlashAttention", "ScaledDotProduct", "short_causal")),
)
_AFTER_MATMUL = (
    (
        "norm",
        (
            "rms_norm",
            "RMSNorm",
            "aten::pow",
            "aten::rsqrt",
            "aten::mean",
            "PowBackward",
            "RsqrtBackward",
            "MeanBackward",
        ),
    ),  # fmt: skip
    ("loss", ("cross_entropy", "log_softmax", "nll_loss", "LogSoftmaxBackward", "NllLoss", "_LinearCrossEntropy")),
)
_MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_mm", "aten::baddbmm", "aten::_addmm")


def _enclosed(names: list[str], rules: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    for cat, fragments in rules:
        if any(f in n for n in names for f in fragments):
            return cat
    return None


def category(names: list[str]) -> str:
    """The category of an operator, given its name and then its enclosing events' names, innermost first.

    Args:
        names: ``[own name, parent's name, grandparent's, ...]``.

    Returns:
        One of :data:`CATEGORIES`.
    """
    early = _enclosed(names, _BEFORE_MATMUL)
    if early is not None:
        return early
    if any(names[0].startswith(m) for m in _MATMUL):
        return "matmul"
    return _enclosed(names, _AFTER_MATMUL) or "other"


def profile_case(side: str, precision: str, quick: bool, steps: int, threads: int | None, top: int) -> dict[str, Any]:
    """Profile ``steps`` training steps of one side in this (fresh) process.

    Args:
        side: ``"lmbricks"`` or ``"hf"``.
        precision: ``"bf16"`` or ``"fp32"``.
        quick: bench/train_lm.py's small model.
        steps: profiled steps (and as many unprofiled ones for the wall time and faults).
        threads: torch threads (None: torch's choice).
        top: how many operators to list by self time.

    Returns:
        ``{"ms_per_step": {category: self CPU ms per step}, "share": {category: fraction},
        "top_ops": [[name, ms per step, calls per step], ...], "step_ms": wall ms per step without the
        profiler, "faults_per_step": minor faults, "system_ms_per_step": kernel CPU time}``.
    """
    from torch.profiler import ProfilerActivity, profile

    if threads:
        torch.set_num_threads(threads)
    step = build_step(side, quick, precision, "cpu")
    for _ in range(2):
        step()
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    wall, ru1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    per_cat: dict[str, float] = defaultdict(float)
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for ev in prof.events():
        names, parent = [ev.name], ev.cpu_parent
        while parent is not None:
            names.append(parent.name)
            parent = parent.cpu_parent
        per_cat[category(names)] += ev.self_cpu_time_total / 1e3 / steps  # microseconds -> ms per step
        per_op[ev.name][0] += ev.self_cpu_time_total / 1e3 / steps
        per_op[ev.name][1] += 1 / steps
    total = sum(per_cat.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "ms_per_step": {c: round(per_cat.get(c, 0.0), 2) for c in CATEGORIES},
        "share": {c: round(per_cat.get(c, 0.0) / total, 4) for c in CATEGORIES},
        "top_ops": [[name, round(ms, 2), round(calls, 1)] for name, (ms, calls) in ranked],
        "step_ms": round(1e3 * wall / steps, 2),
        "faults_per_step": round((ru1.ru_minflt - ru0.ru_minflt) / steps),
        "system_ms_per_step": round(1e3 * (ru1.ru_stime - ru0.ru_stime) / steps, 2),
    }


def table(runs: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per run, the categories' shares, step time, faults and system time."""
    head = "| run | step ms | " + " | ".join(CATEGORIES) + " | faults/step | system ms/step |"
    lines = [head, "|" + "---|" * (len(CATEGORIES) + 5)]
    for name, r in runs.items():
        shares = " | ".join(f"{100 * r['share'][c]:.0f}%" for c in CATEGORIES)
        lines.append(f"| {name} | {r['step_ms']} | {shares} | {r['faults_per_step']} | {r['system_ms_per_step']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="bench/train_lm.py's small model")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per process")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--precision", default="bf16,fp32", help="comma-separated: bf16, fp32")
    ap.add_argument("--top", type=int, default=8, help="operators listed per run")
    args = ap.parse_args(argv)
    from harness import Workload, alternate

    work = {
        f"{side} {prec}": Workload(
            __file__,
            "profile_case",
            {
                "side": side,
                "precision": prec,
                "quick": args.quick,
                "steps": args.steps,
                "threads": args.threads,
                "top": args.top,
            },
        )  # fmt: skip
        for prec in args.precision.split(",")
        for side in SIDES
    }
    runs = {name: results[0] for name, results in alternate(work, 1).items()}
    print(table(runs), file=sys.stderr)
    for name, r in runs.items():
        print(f"\n{name}: " + ", ".join(f"{op} {ms} ms ({calls}x)" for op, ms, calls in r["top_ops"]), file=sys.stderr)
    out = {"runs": runs, "quick": args.quick, "steps": args.steps, "threads": args.threads or torch.get_num_threads()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
