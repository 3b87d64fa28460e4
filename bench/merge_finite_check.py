"""Benchmark: what the merge executor's finiteness checks cost (inputs and output of every tensor).

Uses bench/merge.py's synthetic bf16 Llama checkpoints (``--quick``: ~45M parameters per model,
about 90 MB; default: ~1B) and its linear and ties recipes. In one process, with the inputs in the
page cache (the checks cost CPU, not I/O), runs each merge alternately with the checks on and with
``all_finite`` replaced by a function that returns True, and reports median wall and CPU time of
each, their ratio, and the bytes checked per merge. Prints one JSON object.

Usage: python bench/merge_finite_check.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from merge import CACHE, FULL, QUICK, build_models, recipes  # noqa: E402  (bench/merge.py)


def main() -> None:
    import lmbricks

    lmbricks.tune_process()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~45M-parameter models instead of ~1B")
    ap.add_argument("--repeat", type=int, default=5, help="runs per method and setting (alternating)")
    args = ap.parse_args()

    import lmbricks.merge.executor as ex
    from lmbricks.merge import merge

    paths = build_models(QUICK if args.quick else FULL, CACHE / ("quick" if args.quick else "full"))
    out = CACHE / "finite-check-out"
    checked = ex.all_finite
    checked_bytes = 0

    def counting(t):  # type: ignore[no-untyped-def]
        nonlocal checked_bytes
        checked_bytes += t.numel() * t.element_size()
        return checked(t)

    results: dict[str, dict[str, list[float]]] = {}
    per_merge: dict[str, int] = {}
    for name, recipe in recipes(paths).items():
        shutil.rmtree(out, ignore_errors=True)
        merge(recipe, out)  # warm-up: page cache, numba kernels
        for _ in range(args.repeat):
            for setting in ("on", "off"):
                ex.all_finite = counting if setting == "on" else (lambda _t: True)
                checked_bytes = 0
                shutil.rmtree(out, ignore_errors=True)
                wall, cpu = time.perf_counter(), time.process_time()
                merge(recipe, out)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                runs = results.setdefault(name, {"wall_on": [], "cpu_on": [], "wall_off": [], "cpu_off": []})
                runs[f"wall_{setting}"].append(wall)
                runs[f"cpu_{setting}"].append(cpu)
                if setting == "on":
                    per_merge[name] = checked_bytes
        ex.all_finite = checked
    shutil.rmtree(out, ignore_errors=True)
    report: dict[str, object] = {"models": "quick" if args.quick else "full", "repeat": args.repeat}
    for name, runs in results.items():
        med = {k: statistics.median(v) for k, v in runs.items()}
        report[name] = {
            **{k: round(v, 3) for k, v in med.items()},
            "wall_ratio": round(med["wall_on"] / med["wall_off"], 3),
            "cpu_ratio": round(med["cpu_on"] / med["cpu_off"], 3),
            "checked_MB": round(per_merge[name] / 1e6, 1),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
