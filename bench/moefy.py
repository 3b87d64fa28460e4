"""Benchmark: MoEfication of the default model (32 balanced experts per layer).

Measures, side by side on this machine:
- FFN forward time of one layer's MoEfied FFN (router mode, sparse runtime) at K = 8, 16, 32
  versus the dense FFN, prefill (4 x 256 tokens) and decode (1 token). The dense anchor is the
  faster of transformers' LlamaMLP (separate gate and up) and the fused gate_up variant that
  bench/moe.py uses (``ffn_anchors`` names the winner per phase);
- whole-model tokens/s at the same K versus the dense model (prefill 4 x 256, decode of 16 cached
  tokens after a 32-token prompt);
- the average perplexity change over the five domains at 50% of experts with the oracle and with
  the learned router, then after healing (KL distillation towards the dense model) at 50% and 25%.

Every timed workload runs in its own fresh process (bench/harness.py: forked from a zygote, the
order rotating every round, medians over ``--rounds`` processes), healing too: its wall-clock
budget buys a number of tokens (``heal_tokens``, with ``heal_tokens_per_minute``) that depends
on the process's speed, so it runs in a process with no history. The conversion and the
perplexities are not timed and run in this process; the MoEfied model is saved to a temporary
directory the workers load.

The conversion: balanced co-activation k-means refined for top-K capture, a router per layer
fitted to the experts' output norms (``linear``: closed-form ridge regression, the default;
``mlp``: trained), layers converted in order in one calibration pass. Healing trains the routers
and the experts (everything else frozen) for ``--heal-minutes``.

Utilisation (bench/machine.py, measured at the start by the run's clock): ``ffn_prefill_mfu`` and
``model_prefill_mfu`` (forward FLOPs 2 N T of the active matmul parameters, attention 4 L d S T,
over the fp32 GEMM rate), ``model_decode_bandwidth_share`` (the weight bytes one decoded token
reads, the active experts' only, over the time per token, against the memory bandwidth).

Prints JSON with ``heal_tokens`` (tokens seen while healing), ``ffn_speedup_25pct``,
``ffn_speedup_50pct``, ``model_speedup_25pct``, ``ppl_change_50pct_oracle``,
``ppl_change_50pct_router``, ``ppl_change_50pct_healed`` and ``ppl_change_25pct_healed``
(changes as fractions, 0.10 = +10%), plus the details (including the wall and CPU seconds of every
stage of this process, since the 2 cores may be shared).

``--relufied DIR`` (a ReLU-fied ``--model``, ``lmbricks sparsify relufy``'s output) adds the same
MoEfication of that model (bench/moefy_relufied_workers.py): ``relufied_sparsity``, ``relufied_ppl_change``,
``ppl_change_50pct_healed_relufied``, ``ppl_change_25pct_healed_relufied`` (against the source
SwiGLU model), ``ffn_speedup_25pct_relufied`` (zero-skipping where it pays), ``heal_tokens_relufied``
and ``details_relufied``; ``--relufied-only`` skips the source's conversion (its keys are then null).
``--heal-precision bf16`` heals under bf16 autocast (more tokens in the same minutes).

``--shared-experts S [--active A]`` runs only the shared-experts comparison (bench/moefy_shared_workers.py):
the model cut with no shared expert at K = A and with S shared experts at K = A - S, router and
oracle perplexity change at the same A active experts per token (``ppl_change_router_shared``,
``ppl_change_router_no_shared``, ``ppl_change_oracle_*``); no timing, no healing.

Usage:
    python bench/moefy.py                    # 4 x 256 eval tokens/domain, 8 min healing
    python bench/moefy.py --heal-minutes 30  # the issue's healing budget
    python bench/moefy.py --quick            # 2 x 256 eval tokens/domain, 2 min healing, 2 rounds
    python bench/moefy.py --relufied runs/smol-relu --clock cpu --threads 1   # both arms
    python bench/moefy.py --model runs/smol-relu --shared-experts 4 --active 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lmbricks.data.registry import DEFAULT_DOMAINS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: its helper modules
from moefy_workers import DECODE_STEPS, PREFILL, active_params, save_ffn  # noqa: E402

DOMAINS = DEFAULT_DOMAINS
WORKERS = str(Path(__file__).with_name("moefy_workers.py"))


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


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--split", default="coactivation", choices=["kmeans", "coactivation", "random"])
    parser.add_argument("--router", default="linear", choices=["centroid", "linear", "mlp"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--heal-minutes", type=float, default=None, help="healing budget (default 8, quick 2)")
    parser.add_argument("--heal-lr", type=float, default=1e-4, help="learning rate of the experts")
    parser.add_argument("--heal-precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--relufied", default=None, help="also cut this ReLU-fied model of --model (relufy's output)")
    parser.add_argument(
        "--relufied-only", action="store_true", help="with --relufied: the source gives its dense perplexity only"
    )
    parser.add_argument(
        "--relufied-phases", nargs="+", default=["ffn_prefill", "ffn_decode", "model_decode"],
        choices=["ffn_prefill", "ffn_decode", "model_decode"], help="the ReLU-fied arm's timed phases",
    )  # fmt: skip
    parser.add_argument("--calib-chunks", type=int, default=None, help="calibration blocks per domain")
    parser.add_argument("--calib-seq-len", type=int, default=512, help="tokens per calibration block")
    parser.add_argument("--eval-chunks", type=int, default=None, help="eval blocks per domain (override)")
    parser.add_argument("--eval-seq-len", type=int, default=256, help="tokens per eval block")
    parser.add_argument("--rounds", type=int, default=None, help="fresh processes per timed arm (default 3, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: for a loaded machine, 1 thread")
    parser.add_argument("--shared-experts", type=int, default=0, help="S > 0: only the shared-experts comparison")
    parser.add_argument("--active", type=int, default=16, help="with --shared-experts: experts active per token")
    return parser


PHASES = ("ffn_prefill", "ffn_decode", "model_prefill", "model_decode")


def timings(
    directory: str,
    model: str,
    ks: list[int],
    rounds: int,
    threads: int | None = None,
    clock: str = "wall",
    quick: bool = False,
    phases: tuple[str, ...] = PHASES,
    zero_skip: bool = False,
) -> dict[str, dict[str, float]]:
    """Every timed (phase, arm) in its own fresh process per round (bench/harness.py), medians.

    Args:
        directory: the saved MoEfied model with the layer's modules beside it (``save_ffn``).
        model: the dense model's reference.
        ks: experts per token of the MoEfied arms.
        rounds: processes per (phase, arm).
        threads: torch threads in the workers (None: torch's choice).
        clock: ``"wall"`` or ``"cpu"``.
        quick: fewer repetitions of the whole-model workloads.
        phases: a subset of :data:`PHASES` (the reproducibility test times the FFN's prefill).
        zero_skip: also time every K with zero-skipping on (arms ``K=k+zs``; ``K=k`` has it off).

    Returns:
        ``{phase: {arm: median seconds by the clock}}``; arms ``dense``, ``dense_fused`` (FFN only),
        ``K=k`` and, with ``zero_skip``, ``K=k+zs``.
    """
    from harness import CLOCKS, Workload, alternate, medians

    k_arms = [f"K={k}{zs}" for k in ks for zs in (("", "+zs") if zero_skip else ("",))]
    common = {"directory": directory, "threads": threads}
    ffn_phases = {"ffn_prefill": (PREFILL[0] * PREFILL[1], 15), "ffn_decode": (1, 50)}
    work: dict[str, Workload] = {}
    for phase in phases:
        if phase in ffn_phases:
            tokens, reps = ffn_phases[phase]
            for arm in ["dense", "dense_fused", *k_arms]:
                kwargs = {**common, "arm": arm, "tokens": tokens, "reps": reps}
                work[f"{phase}/{arm}"] = Workload(WORKERS, "ffn_case", kwargs)
        else:
            for arm in ["dense", *k_arms]:
                kwargs = {**common, "arm": arm, "phase": phase[6:], "model": model, "reps": 2 if quick else 3}
                work[f"{phase}/{arm}"] = Workload(WORKERS, "model_case", kwargs)
    med = medians(alternate(work, rounds), CLOCKS[clock])
    out: dict[str, dict[str, float]] = {}
    for name, seconds in med.items():
        phase, arm = name.split("/")
        out.setdefault(phase, {})[arm] = seconds
    return out


def _speeds(t: dict[str, dict[str, float]], ks: list[int], cfg: Any, machine: dict[str, Any], e: int) -> dict[str, Any]:
    """Speedups against the dense anchors and the utilisation of the machine's limits."""
    peak, bw = machine["gemm_gflops_fp32"] * 1e9, machine["bandwidth_gbs"] * 1e9
    h, i = cfg.hidden_size, cfg.intermediate_size
    arms = {f"K={k}": k / e for k in ks}
    ffn: dict[str, Any] = {"anchors": {}}
    for phase in ("ffn_prefill", "ffn_decode"):
        anchor = min(("dense", "dense_fused"), key=lambda a: t[phase][a])
        ffn["anchors"][phase] = anchor
        ffn[phase] = {f"{a}_ms": 1e3 * s for a, s in t[phase].items()}
        ffn[phase] |= {f"{a}_speedup": t[phase][anchor] / t[phase][a] for a in arms}
    tokens = PREFILL[0] * PREFILL[1]
    ffn["ffn_prefill_mfu"] = {
        a: 2 * tokens * 3 * h * i * arms.get(a, 1.0) / s / peak for a, s in t["ffn_prefill"].items()
    }
    whole: dict[str, Any] = {}
    attention = 4 * cfg.num_hidden_layers * h * PREFILL[1] * tokens  # QK^T and AV, non-causal count
    for a, s in t["model_prefill"].items():
        whole[f"prefill_{a}_tok_s"] = tokens / s
        whole[f"prefill_{a}_mfu"] = (2 * active_params(cfg, arms.get(a, 1.0))["matmul"] * tokens + attention) / s / peak
    for a, s in t["model_decode"].items():
        per_token = s / DECODE_STEPS
        whole[f"decode_{a}_tok_s"] = 1 / per_token
        whole[f"decode_{a}_bandwidth_share"] = 4 * active_params(cfg, arms.get(a, 1.0))["weights"] / per_token / bw
    for a in arms:
        whole[f"prefill_{a}_speedup"] = t["model_prefill"]["dense"] / t["model_prefill"][a]
        whole[f"decode_{a}_speedup"] = t["model_decode"]["dense"] / t["model_decode"][a]
    return {"ffn": ffn, "model": whole}


def mean_change(ppl: dict[str, float] | None, dense: dict[str, float]) -> float | None:
    """The mean over domains of ``ppl / dense - 1`` (None without ``ppl``)."""
    return None if ppl is None else sum(ppl[d] / dense[d] - 1.0 for d in ppl) / len(ppl)


def per_domain_change(ppl: dict[str, float] | None, dense: dict[str, float]) -> dict[str, float] | None:
    """``{domain: ppl / dense - 1}`` (None without ``ppl``)."""
    return None if ppl is None else {d: ppl[d] / dense[d] - 1.0 for d in ppl}


def heal_run(directory: str, model: str, settings: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Heal the saved MoEfied model in a fresh process (``moefy_workers.heal_case``); {} at 0 minutes."""
    from harness import Workload, alternate

    if settings["minutes"] <= 0:
        return {}
    work = Workload(WORKERS, "heal_case", {"directory": directory, "model": model, "settings": settings,
                                             "threads": threads})  # fmt: skip
    return dict(alternate({"heal": work}, 1)["heal"][0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from machine import measure_machine

    from lmbricks.analysis import find_ffns
    from lmbricks.analysis.corpus import domain_chunks
    from lmbricks.hub import load_hf_model
    from lmbricks.moefy import make_config, moefied_layers, moefy_model
    from lmbricks.moefy.evaluate import ppl_curve
    from lmbricks.moefy.io import save_moefied

    clock = Clock()
    if args.shared_experts:
        from moefy_shared_workers import shared_run

        return _emit(shared_run(args, clock), argv)
    e = args.experts
    k25, k50 = e // 4, e // 2
    ks = [k25, k50, e]
    heal_minutes = args.heal_minutes if args.heal_minutes is not None else (2.0 if args.quick else 8.0)
    calib_chunks = args.calib_chunks or (2 if args.quick else 4)
    eval_chunks = args.eval_chunks or (2 if args.quick else 4)
    rounds = args.rounds or (2 if args.quick else 3)
    cfg = make_config(experts=e, top_k=k50, split=args.split, router=args.router, calib_chunks=calib_chunks,
                      calib_seq_len=args.calib_seq_len, router_steps=150 if args.quick else 300)  # fmt: skip
    settings = {"minutes": heal_minutes, "lr": args.heal_lr, "k25": k25, "k50": k50, "eval_chunks": eval_chunks,
                "eval_seq_len": args.eval_seq_len, "precision": args.heal_precision}  # fmt: skip
    if args.relufied_only:
        from moefy_relufied_workers import relufied_only

        return _emit(relufied_only(args, cfg, ks, clock, rounds, settings), argv)
    clock.start("machine limits")
    machine = measure_machine(((4 * 256, 576, 2 * 1536),), min_seconds=0.2, clock=args.clock)

    clock.start("load")
    dense, tokenizer = load_hf_model(args.model)
    model, _ = load_hf_model(args.model)
    clock.start("convert")
    info = moefy_model(model, tokenizer, cfg)
    evals = domain_chunks(tokenizer, DOMAINS, "test", eval_chunks, args.eval_seq_len)
    clock.start("perplexity: oracle and router")
    before = ppl_curve(model, evals, [k25, k50], ("oracle", "router"))
    with tempfile.TemporaryDirectory(prefix="bench-moefy-") as tmp:
        clock.start("save")
        directory = str(save_moefied(model, Path(tmp) / "moefied", cfg, info.permutations, tokenizer=tokenizer))
        block = find_ffns(dense)[len(find_ffns(dense)) // 2]
        ffn = moefied_layers(model)[block.layer]
        save_ffn(directory, block.module, ffn, block.hidden)
        hf_config = dense.config
        del dense, model, ffn, block  # the workers load their own
        clock.start("timing (fresh processes)")
        t = timings(directory, args.model, ks, rounds, args.threads, args.clock, args.quick)
        speeds = _speeds(t, ks, hf_config, machine, e)
        clock.start("healing (a fresh process)")
        healed = heal_run(directory, args.model, settings, args.threads)
    relufied: dict[str, Any] = {}
    if args.relufied:
        from moefy_relufied_workers import relufied_arm

        relufied = relufied_arm(args, cfg, ks, evals, before.dense_ppl, clock, rounds, settings)
    clock.stop()
    out = _report(args, info, before, healed, speeds, ks, eval_chunks, machine, clock, rounds, heal_minutes)
    if relufied:
        out = {**relufied.pop("keys"), **out, **relufied}
    return _emit(out, argv)


def _emit(out: dict[str, Any], argv: list[str] | None) -> dict[str, Any]:
    """``out`` with the command line that produced it, printed as JSON."""
    out["command"] = "python bench/moefy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps(out, indent=2))
    return out


def _report(
    args: Any, info: Any, before: Any, healed: dict[str, Any], speeds: dict[str, Any], ks: list[int],
    eval_chunks: int, machine: dict[str, Any], clock: Clock, rounds: int, heal_minutes: float,
) -> dict[str, Any]:  # fmt: skip
    """The JSON: the headline keys first, the details after."""
    k25, k50, e = ks
    after = healed.get("after", {})
    dense_ppl = before.dense_ppl
    ffn, whole = speeds["ffn"], speeds["model"]

    def change(mode: str, k: int) -> float | None:
        point = before.find(mode, k)
        return None if point is None else float(before.change(point))

    def per_domain(mode: str, k: int) -> dict[str, float] | None:
        point = before.find(mode, k)
        return None if point is None else per_domain_change(point.ppl, dense_ppl)

    healing = healed.get("healing", {})
    return {
        "heal_tokens": healing.get("tokens"),
        "heal_tokens_per_minute": healing.get("tokens_per_minute"),
        "heal_budget_minutes": heal_minutes,
        "ffn_speedup_25pct": ffn["ffn_prefill"][f"K={k25}_speedup"],
        "ffn_speedup_50pct": ffn["ffn_prefill"][f"K={k50}_speedup"],
        "model_speedup_25pct": whole[f"prefill_K={k25}_speedup"],
        "ppl_change_50pct_oracle": change("oracle", k50),
        "ppl_change_50pct_router": change("router", k50),
        "ppl_change_50pct_healed": mean_change(after.get(str(k50)), dense_ppl),
        "ppl_change_25pct_healed": mean_change(after.get(str(k25)), dense_ppl),
        "ffn_prefill_mfu": ffn["ffn_prefill_mfu"],
        "model_prefill_mfu": {k[8:-4]: v for k, v in whole.items() if k.startswith("prefill_") and k.endswith("_mfu")},
        "model_decode_bandwidth_share": {
            k[7:-16]: v for k, v in whole.items() if k.startswith("decode_") and k.endswith("_bandwidth_share")
        },
        "precision": "fp32",
        "clock": args.clock,
        "machine_limits": machine,
        "details": {
            "model": args.model,
            "experts": e,
            "split": args.split,
            "router": args.router,
            "calib_tokens": info.calib_tokens,
            "eval_tokens_per_domain": eval_chunks * args.eval_seq_len,
            "dense_ppl": dense_ppl,
            "dense_ppl_after_healing": healed.get("dense_ppl"),
            "healed_change_note": "healed perplexities against the original dense model's",
            "calibration_oracle_mass_share_at_50pct": sum(info.oracle_share) / max(len(info.oracle_share), 1),
            "router_recall_at_50pct": sum(info.router_recall) / max(len(info.router_recall), 1),
            "ppl_change_25pct_oracle": change("oracle", k25),
            "ppl_change_25pct_router": change("router", k25),
            "per_domain_50pct": {
                "oracle": per_domain("oracle", k50),
                "router": per_domain("router", k50),
                "healed": per_domain_change(after.get(str(k50)), dense_ppl),
            },
            "ffn_prefill": ffn["ffn_prefill"],
            "ffn_decode": ffn["ffn_decode"],
            "ffn_anchors": ffn["anchors"],
            "model_speed": whole,
            "healing": healing,
            "rounds": {"processes_per_arm": rounds},
            "threads": args.threads or torch.get_num_threads(),
            "stages": clock.stages,
        },
    }


if __name__ == "__main__":
    main()
