"""In-context learning curves (direct vs chain of thought) on the default model: docs/instruction-tuning.md.

Runs every (task, mode, shots) condition with :func:`lmbricks.eval.fewshot.evaluate_condition`,
saving each condition as it finishes (``OUT/conditions/*.json``), so the experiment can run in
slices (``--max-minutes``: stop after the condition that crosses the budget; run again to go on).
When every condition is done it writes ``OUT/{task}.json`` and the plots ``IMG/fewshot_{task}.png``.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python scripts/fewshot_experiment.py --max-minutes 14
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tasks", nargs="+", default=["langid", "champ"])
    ap.add_argument("--shots", nargs="+", type=int, default=[0, 1, 2, 4, 8])
    ap.add_argument("--modes", nargs="+", default=["direct", "cot"])
    ap.add_argument("--n", nargs="+", default=["langid=28", "champ=31"], help="items per task (first N)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--format", default="plain", choices=["plain", "chat"], help="prompt format")
    ap.add_argument("--out", type=Path, default=Path("runs/fewshot-experiment"))
    ap.add_argument("--img", type=Path, default=Path("docs/img"))
    ap.add_argument("--tag", default="", help="suffix of the plot names (another model)")
    ap.add_argument("--max-minutes", type=float, default=None)
    args = ap.parse_args()

    from lmbricks.eval.fewshot import constant_baseline, evaluate_condition, get_task, plot_curves
    from lmbricks.nn.load import load_model

    n_of = {k: int(v) for k, v in (x.split("=") for x in args.n)}
    cond_dir = args.out / "conditions"
    cond_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = tokenizer = None
    todo = [(t, m, k) for t in args.tasks for m in args.modes for k in args.shots]
    for task_name, mode, k in todo:
        suffix = "" if args.format == "plain" else f"-{args.format}"
        path = cond_dir / f"{task_name}-{mode}-{k}{suffix}.json"
        if path.exists():
            continue
        if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
            print(f"time budget reached; run again to continue ({path.name} next)")
            return
        if model is None:
            model, tokenizer = load_model(args.model)
        task = get_task(task_name)
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate_condition(model, tokenizer, task, k, mode == "cot", n=n_of.get(task_name), fmt=args.format,
                                 batch_size=args.batch_size, keep_examples=2)  # fmt: skip
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        res["cpu_s"] = round(time.process_time() - c0, 1)
        path.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        print(f"{task_name} {mode} {k}-shot: {res['correct']}/{res['n']} "
              f"top {res['top_predictions']} ({res['wall_s']} s wall, {res['cpu_s']} s cpu)", flush=True)  # fmt: skip
    summary: dict[str, Any] = {}
    for task_name in args.tasks:
        task = get_task(task_name)
        suffix = "" if args.format == "plain" else f"-{args.format}"
        files = [cond_dir / f"{task_name}-{m}-{k}{suffix}.json" for m in args.modes for k in args.shots]
        conds = [json.loads(f.read_text()) for f in files]
        results = {
            "model": args.model,
            "task": task_name,
            "format": args.format,
            "n_items": conds[0]["n"],
            "chance": 1 / len(task.labels) if task.labels else 0.0,
            "constant_baseline": constant_baseline(task, n_of.get(task_name)),
            "conditions": conds,
            "wall_s": sum(c["wall_s"] for c in conds),
            "cpu_s": sum(c["cpu_s"] for c in conds),
        }
        (args.out / f"{task_name}{suffix}.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        png = plot_curves(results, args.img / f"fewshot_{task_name}{suffix}{args.tag}.png",
                          f"{args.model}: {task_name} ({results['n_items']} items)")  # fmt: skip
        summary[task_name] = {
            "png": str(png),
            "wall_s": results["wall_s"],
            "cpu_s": results["cpu_s"],
            "curve": {f"{'cot' if c['cot'] else 'direct'}-{c['shots']}": f"{c['correct']}/{c['n']}" for c in conds},
        }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
