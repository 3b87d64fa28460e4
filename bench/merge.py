"""Benchmark: lmbricks merge vs mergekit on ~1B-parameter synthetic Llama checkpoints (bf16).

Builds (and caches under bench/.cache/) a base and two "fine-tunes" (base + small Gaussian noise),
installs mergekit into its own venv (.bench-venvs/mergekit) if missing, then runs both tools in the
same run, alternating, on (a) linear 0.4/0.3/0.3, (b) ties 0.5/0.5 with density [1.0, 0.5, 0.3]
and 0.5, int8_mask, and the methods added in session 7 (same keys): nuslerp 0.5/0.5 on the task
vectors, karcher over the three models, sce select_topk 0.5, ram, ramplus_tl, nearswap t 0.001,
arcee_fusion (``--methods`` picks some). Each run starts from a cold page cache for the inputs (drop_caches if
permitted, else posix_fadvise DONTNEED). Measures wall and CPU time, peak RSS and peak anonymous
memory (RssAnon of the process tree, polled), and the disk floor: a cold read of the inputs plus
writing (and fsyncing) an output of the same size. Prints one JSON object.

Input hashes for lmbricks.json are cached by (path, size, mtime); the set-up hashes the inputs
once, as any earlier use of the same inputs would.

Utilisation: the bytes a merge moves (inputs read + output written) per second, beside the same
for the disk floor (``lmbricks_gbs``, ``floor_gbs``; ``disk_floor_share`` = floor time / merge
time) and against the memory bandwidth of bench/machine.py measured at the start
(``memory_bandwidth_share``, ``machine_limits``); each tool runs in its own fresh process,
alternating; times are medians over ``--repeat`` runs (all runs under ``wall_s_runs``).

Usage: python bench/merge.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
MK_VENV = ROOT / ".bench-venvs" / "mergekit"
LB = ROOT / ".venv" / "bin" / "lmbricks"

FULL = dict(
    hidden_size=2048,
    num_hidden_layers=16,
    intermediate_size=5632,
    num_attention_heads=16,
    num_key_value_heads=16,
    vocab_size=32000,
)
QUICK = dict(
    hidden_size=512,
    num_hidden_layers=4,
    intermediate_size=1408,
    num_attention_heads=8,
    num_key_value_heads=8,
    vocab_size=32000,
)


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def ensure_mergekit() -> Path:
    py = MK_VENV / "bin" / "python"
    if not (MK_VENV / "bin" / "mergekit-yaml").exists():
        log("installing mergekit into", MK_VENV)
        subprocess.run([sys.executable, "-m", "venv", str(MK_VENV)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), "mergekit"],
            check=True,
        )
    return MK_VENV / "bin" / "mergekit-yaml"


def build_models(sizes: dict, root: Path, noise: float = 0.002) -> dict[str, Path]:
    """Write base, ft1, ft2 (bf16) tensor by tensor; cached by a marker file."""
    from transformers import LlamaConfig

    from lmbricks.checkpoint import ShardedWriter, atomic_directory, expected_tensors
    from lmbricks.testing import build_tiny_tokenizer

    names = ["base", "ft1", "ft2"]
    paths = {n: root / n for n in names}
    if all((p / "config.json").exists() for p in paths.values()):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(**sizes, tie_word_embeddings=False, max_position_embeddings=2048, dtype="bfloat16")
    config = cfg.to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    specs = expected_tensors(config)
    tok = build_tiny_tokenizer()
    log("building", root, f"{sum(torch.Size(s).numel() for s in specs.values()) / 1e9:.2f}B params")
    ctxs = [atomic_directory(paths[n], force=True) for n in names]
    tmps = [c.__enter__() for c in ctxs]
    writers = [ShardedWriter(t, "2GB") for t in tmps]
    for w in writers:
        w.declare([(k, s, torch.bfloat16) for k, s in specs.items()])
    g = torch.Generator().manual_seed(0)
    for k, shape in specs.items():
        base = torch.ones(shape) if k.endswith("norm.weight") else torch.randn(shape, generator=g).mul_(0.02)
        writers[0].add(k, base.bfloat16())
        for w in writers[1:]:
            w.add(k, (base + torch.randn(shape, generator=g).mul_(noise)).bfloat16())
        del base
    for _n, w, t, c in zip(names, writers, tmps, ctxs, strict=False):
        w.finish()
        (t / "config.json").write_text(json.dumps(config, indent=2))
        tok.save_pretrained(t)
        c.__exit__(None, None, None)
    return paths


def input_files(paths: dict[str, Path]) -> list[Path]:
    return [f for p in paths.values() for f in sorted(p.iterdir()) if f.is_file()]


DROP_ALL = False  # --drop-caches: also evicts the tools' own libraries (cold imports for both)


def drop_cache(files: list[Path]) -> str:
    """Evict the inputs from the page cache (all caches with --drop-caches, if permitted)."""
    os.sync()
    if DROP_ALL:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as fh:
                fh.write("3\n")
            return "drop_caches"
        except OSError:
            pass
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "fadvise"


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall, CPU (children rusage), peak RSS and peak RssAnon of the tree (polled)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = {"anon": 0, "rss": 0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            pids = _tree(proc.pid)
            peak["anon"] = max(peak["anon"], sum(_status_kb(p, "RssAnon") for p in pids))
            peak["rss"] = max(peak["rss"], sum(_status_kb(p, "VmRSS") for p in pids))
            done.wait(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed ({status}):\n{err[-3000:]}")
    return {
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_gb": max(peak["rss"], ru.ru_maxrss) / 1e6,
        "peak_anon_gb": peak["anon"] / 1e6,
    }


def disk_floor(files: list[Path], out_bytes: int, scratch: Path) -> float:
    drop_cache(files)
    buf = bytearray(16 << 20)
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / "floor.bin"
    with open(target, "wb", buffering=0) as fh:
        left = out_bytes
        view = memoryview(buf)
        while left > 0:
            n = fh.write(view[: min(len(buf), left)])
            left -= n
        os.fsync(fh.fileno())
    t = time.perf_counter() - t0
    target.unlink()
    return t


def recipes(paths: dict[str, Path]) -> dict[str, dict]:
    b, f1, f2 = (str(paths[k]) for k in ("base", "ft1", "ft2"))
    return {
        "linear": {
            "merge_method": "linear",
            "models": [
                {"model": b, "parameters": {"weight": 0.4}},
                {"model": f1, "parameters": {"weight": 0.3}},
                {"model": f2, "parameters": {"weight": 0.3}},
            ],
            "dtype": "bfloat16",
        },
        "ties": {
            "merge_method": "ties",
            "base_model": b,
            "models": [
                {"model": f1, "parameters": {"weight": 0.5, "density": [1.0, 0.5, 0.3]}},
                {"model": f2, "parameters": {"weight": 0.5, "density": 0.5}},
            ],
            "parameters": {"int8_mask": True},
            "dtype": "bfloat16",
        },
        # the methods added in session 7, each with the keys of linear and ties
        "nuslerp": {
            "merge_method": "nuslerp",
            "base_model": b,
            "models": [{"model": f1, "parameters": {"weight": 0.5}}, {"model": f2, "parameters": {"weight": 0.5}}],
            "dtype": "bfloat16",
        },
        "karcher": {
            "merge_method": "karcher",
            "models": [{"model": b}, {"model": f1}, {"model": f2}],
            "dtype": "bfloat16",
        },
        "sce": {
            "merge_method": "sce",
            "base_model": b,
            "models": [{"model": f1}, {"model": f2}],
            "parameters": {"select_topk": 0.5},
            "dtype": "bfloat16",
        },
        "ram": {"merge_method": "ram", "base_model": b, "models": [{"model": f1}, {"model": f2}], "dtype": "bfloat16"},
        "ramplus_tl": {
            "merge_method": "ramplus_tl",
            "base_model": b,
            "models": [{"model": f1}, {"model": f2}],
            "dtype": "bfloat16",
        },
        "nearswap": {
            "merge_method": "nearswap",
            "base_model": b,
            "models": [{"model": f1}],
            "parameters": {"t": 0.001},
            "dtype": "bfloat16",
        },
        "arcee_fusion": {
            "merge_method": "arcee_fusion",
            "base_model": b,
            "models": [{"model": f1}],
            "dtype": "bfloat16",
        },
    }


#: Every benchmarked method (the keys of :func:`recipes`), in the JSON's order.
METHODS = ("linear", "ties", "nuslerp", "karcher", "sce", "ram", "ramplus_tl", "nearswap", "arcee_fusion")


def main() -> None:
    import lmbricks

    lmbricks.tune_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models, for a fast check")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool and method (alternating)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from: " + ", ".join(METHODS))
    ap.add_argument("--drop-caches", action="store_true", help="drop all page caches (cold imports too)")
    args = ap.parse_args()
    global DROP_ALL
    DROP_ALL = args.drop_caches

    import yaml

    from lmbricks.checkpoint import content_hash

    mk = ensure_mergekit()
    root = CACHE / ("quick" if args.quick else "full")
    paths = build_models(QUICK if args.quick else FULL, root)
    for p in paths.values():
        content_hash(p)  # warm the hash cache (see module docstring)
    files = input_files(paths)
    work = CACHE / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base_bytes = sum(f.stat().st_size for f in paths["base"].iterdir() if f.suffix == ".safetensors")
    floors = [disk_floor(files, base_bytes, work) for _ in range(2)]
    floor = min(floors)
    moved = sum(f.stat().st_size for f in files if f.suffix == ".safetensors") + base_bytes  # read + written
    sys.path.insert(0, str(ROOT / "bench"))
    from machine import measure_machine

    machine = measure_machine(min_seconds=0.2)
    log(f"disk floor {floor:.1f}s (reads {sum(f.stat().st_size for f in files) / 1e9:.1f} GB)")

    result: dict = {}
    for name in args.methods.split(","):
        recipe = recipes(paths)[name]
        rpath = work / f"{name}.yaml"
        rpath.write_text(yaml.safe_dump(recipe))
        runs: dict[str, list[dict]] = {"lmbricks": [], "mergekit": []}
        for rep in range(args.repeat):
            order = ["lmbricks", "mergekit"] if rep % 2 == 0 else ["mergekit", "lmbricks"]
            for tool in order:
                out = work / f"out_{tool}"
                shutil.rmtree(out, ignore_errors=True)
                how = drop_cache(files)
                cmd = (
                    [str(LB), "merge", str(rpath), str(out)] if tool == "lmbricks" else [str(mk), str(rpath), str(out)]
                )
                m = run_measured(cmd)
                m["cache"] = how
                runs[tool].append(m)
                log(
                    name,
                    tool,
                    json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()}),
                )
                shutil.rmtree(out, ignore_errors=True)
        lb = statistics.median(r["wall_s"] for r in runs["lmbricks"])
        mkt = statistics.median(r["wall_s"] for r in runs["mergekit"])
        result[name] = {
            "lmbricks_s": round(lb, 2),
            "mergekit_s": round(mkt, 2),
            "floor_s": round(floor, 2),
            "vs_mergekit": round(lb / mkt, 3),
            "vs_floor": round(lb / floor, 3),
            "lmbricks_anon_gb": round(max(r["peak_anon_gb"] for r in runs["lmbricks"]), 3),
            "mergekit_anon_gb": round(max(r["peak_anon_gb"] for r in runs["mergekit"]), 3),
            "lmbricks_cpu_s": round(statistics.median(r["cpu_s"] for r in runs["lmbricks"]), 2),
            "mergekit_cpu_s": round(statistics.median(r["cpu_s"] for r in runs["mergekit"]), 2),
            "lmbricks_rss_gb": round(max(r["peak_rss_gb"] for r in runs["lmbricks"]), 3),
            "mergekit_rss_gb": round(max(r["peak_rss_gb"] for r in runs["mergekit"]), 3),
            "wall_s_runs": {t: [round(r["wall_s"], 2) for r in rs] for t, rs in runs.items()},
            "cache": runs["lmbricks"][0]["cache"],
            "bytes_moved": moved,
            "lmbricks_gbs": round(moved / lb / 1e9, 3),
            "mergekit_gbs": round(moved / mkt / 1e9, 3),
            "floor_gbs": round(moved / floor / 1e9, 3),
            # utilisation: bytes moved per second against the disk floor's and the memory bandwidth
            "disk_floor_share": round(floor / lb, 3),
            "memory_bandwidth_share": round(moved / lb / 1e9 / machine["bandwidth_gbs"], 4),
        }
    result["machine_limits"] = machine
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
