"""Benchmark: expert parallelism's all-to-all overhead per MoE layer, and training tokens/s on 1, 2, 4 processes.

1. **Layer**: one MoE layer (H 256, 8 experts of 512, top-2, SwiGLU), forward + backward on the same
   global tokens: one process on all of them, then W = 2 and 4 gloo processes (expert parallel, each
   with 1/W of the tokens and 1/W of the experts). Each process runs one torch thread and is timed by
   its own CPU time (the machine may be shared); the all-to-alls are also timed alone, with the
   splits of a real step, so their share is measured, not inferred. ``ep_cpu_vs_single`` is the CPU
   the W processes spend together over the single process's.
2. **Model** of the same layer on a cluster: the bytes each rank sends per step (four all-to-alls,
   measured splits) over a stated link bandwidth, next to the measured compute per rank.
3. **Training**: ``lmbricks train`` of docs/distributed/tiny-moe.yaml (shortened) under torchrun with
   1, 2 and 4 processes, DDP and expert parallel; tokens/s is the median of the logged steps after
   the first two. On a 2-core machine 4 processes share 2 cores: the figure says what this machine
   does, not what 4 devices would.

Usage: python bench/distributed.py [--tokens 4096] [--repeats 5] [--steps 8] [--no-train]
       [--link-gbytes 12.5]   (GB/s per rank: 100 Gb/s Ethernet / InfiniBand)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
H, INTER, E, K = 256, 512, 8, 2


def _layer() -> Any:
    from lmbricks.moe import MoEConfig, build_moe

    torch.manual_seed(0)
    return build_moe(MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=E, top_k=K), impl="loop")


def _step_cpu(layer: Any, x: torch.Tensor, repeats: int) -> float:
    """Median process CPU seconds of one forward + backward."""
    times = []
    for i in range(repeats + 1):
        start = time.process_time()
        y, _ = layer(x)
        y.square().mean().backward()
        if i:  # the first call warms the allocator and kernels
            times.append(time.process_time() - start)
    return statistics.median(times)


def _worker(rank: int, world: int, port: int, tokens: int, repeats: int, out: str) -> None:
    from lmbricks.moe.expert_parallel import ShardedExperts, all_to_all_rows

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    layer = _layer()
    layer.experts = ShardedExperts(layer.experts, None, rank, world)
    x = torch.randn(tokens, H, generator=torch.Generator().manual_seed(rank)).requires_grad_()
    dist.barrier()
    cpu = _step_cpu(layer, x, repeats)
    with torch.no_grad():  # the splits of this step, to time the exchanges alone and count bytes
        r = layer.router(x)
        sent = torch.bincount(r.indices.reshape(-1), minlength=E).view(world, -1).sum(1)
    got = torch.empty_like(sent)
    dist.all_to_all_single(got, sent)
    rows = torch.randn(int(sent.sum()), H)
    a2a = []
    for _ in range(repeats):
        dist.barrier()
        start = time.process_time()
        back = all_to_all_rows(rows, got.tolist(), sent.tolist())
        all_to_all_rows(back, sent.tolist(), got.tolist())
        a2a.append(2 * (time.process_time() - start))  # forward's two exchanges; the backward has two more
    remote = int(sent.sum() - sent[rank])
    result = {"cpu_seconds": cpu, "a2a_cpu_seconds": statistics.median(a2a), "bytes_sent": 4 * remote * H * 4}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def layer_bench(tokens: int, repeats: int, link: float) -> dict[str, Any]:
    """The single-process layer and the expert-parallel one on W = 2, 4 at equal global tokens."""
    torch.set_num_threads(1)
    single = _step_cpu(_layer(), torch.randn(tokens, H).requires_grad_(), repeats)
    out: dict[str, Any] = {"global_tokens": tokens, "single_cpu_seconds": single}
    for world in (2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_worker, args=(world, _port(), tokens // world, repeats, tmp), nprocs=world)
            ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
        worst = max(r["cpu_seconds"] for r in ranks)
        sent = max(r["bytes_sent"] for r in ranks)
        out[f"ep{world}"] = {
            "cpu_seconds_per_rank_max": worst,
            "ep_cpu_vs_single": sum(r["cpu_seconds"] for r in ranks) / single,
            "a2a_cpu_seconds_per_rank": max(r["a2a_cpu_seconds"] for r in ranks),
            "a2a_share_of_rank_step": max(r["a2a_cpu_seconds"] for r in ranks) / worst,
            "bytes_sent_per_rank": sent,
            "model_link_seconds": sent / (link * 1e9),
            "model_step_seconds": worst + sent / (link * 1e9),
            "model_speedup_vs_single": single / (worst + sent / (link * 1e9)),
        }
    return out


def _train(procs: int, parallel: Any, steps: int, tmp: Path, name: str) -> float:
    """Median tokens/s of a shortened docs/distributed/tiny-moe.yaml run."""
    import yaml

    cfg = yaml.safe_load((ROOT / "docs" / "distributed" / "tiny-moe.yaml").read_text())
    cfg.update(steps=steps, checkpoint_every=10 * steps, parallel=parallel)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp / name
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m"]
    cmd = [*launch, "lmbricks.cli.main"] if procs > 1 else [sys.executable, "-m", "lmbricks.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    # the trainer's summary line goes to standard error: standard output is this script's JSON alone
    subprocess.run(
        [*cmd, "train", str(path), "-o", str(run), "-q", "--force"],
        check=True,
        env=env,
        timeout=900,
        stdout=sys.stderr,
    )
    rates = [json.loads(line)["tokens_per_s"] for line in (run / "log.jsonl").read_text().splitlines()]
    return statistics.median(rates[2:])


def train_bench(steps: int) -> dict[str, float]:
    """Tokens/s of DDP on 1, 2, 4 processes and of expert parallel (R = world) on 2 and 4."""
    layouts: list[tuple[str, int, Any]] = [("ddp_1", 1, "ddp"), ("ddp_2", 2, "ddp"), ("ddp_4", 4, "ddp")]
    layouts += [("experts_2", 2, {"experts": 2}), ("experts_4", 4, {"experts": 4})]
    with tempfile.TemporaryDirectory() as tmp:
        return {name: _train(procs, parallel, steps, Path(tmp), name) for name, procs, parallel in layouts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--link-gbytes", type=float, default=12.5, help="modelled link bandwidth, GB/s per rank")
    parser.add_argument("--no-train", action="store_true", help="the layer measurement only")
    args = parser.parse_args()
    from lmbricks import tune_process

    tune_process()
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, gloo, one torch thread per process; CPU-time clock",
        "gpu": "none was available to this benchmark (no NCCL figure)",
        "layer": f"MoE H {H}, {E} experts of {INTER}, top-{K}, SwiGLU, forward + backward",
        "link_gbytes_per_s": args.link_gbytes,
        "per_layer": layer_bench(args.tokens, args.repeats, args.link_gbytes),
    }
    if not args.no_train:
        result["train_tokens_per_s"] = train_bench(args.steps)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
