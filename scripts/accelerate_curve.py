"""Distil an acceleration plug-in with a curve: tail bits per byte on held-out windows at checkpoints (docs/plugins.md).

The steps are ``lmbricks plugins accelerate train``'s (``training_batches`` on the job's domains, then
``distill``). At each step of ``--eval-at`` the plug-in is scored on the first ``--windows`` 256-token
windows of en_prose and code (test split): the last 63 tokens after a 192-token prompt, as
``plugins accelerate eval`` scores its *plug-in* column. The brick is written at every checkpoint,
so a run stopped early leaves its last one. Progress goes to ``OUT.progress.log``, the curve to
``OUT.curve.json``.

Run from the repository root (one thread)::

    OMP_NUM_THREADS=1 python scripts/accelerate_curve.py runs/r2 --ratio 2 --steps 90 --prefix-weight 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def _tail_bits(model: Any, plugin: Any, windows: Any, prefix: int) -> float:
    """Bits of the tokens after ``prefix + 1`` of every window; ``plugin`` None: the plain model."""
    import torch
    import torch.nn.functional as F

    from lmbricks.plugins.accelerate.forward import compressed_logits

    total = 0.0
    with torch.inference_mode():
        for row in windows:
            logits = model(row[None]).logits if plugin is None else compressed_logits(model, plugin, row[None], 64)
            total += float(F.cross_entropy(logits[0, prefix:-1].float(), row[prefix + 1 :], reduction="sum"))
    return total / math.log(2)


def _held_out(model: Any, tok: Any, count: int, prefix: int) -> tuple[dict[str, Any], dict[str, int], dict[str, float]]:
    """The first ``count`` test windows of en_prose and code, their scored bytes and the plain model's bpb."""
    from lmbricks.data.tokens import token_chunks
    from lmbricks.eval.domains import held_out_texts

    windows = {d: token_chunks(tok, [t], 256, count * 256) for d, t in held_out_texts(("en_prose", "code")).items()}
    nbytes = {d: sum(len(tok.decode(r[prefix + 1 :].tolist()).encode()) for r in w) for d, w in windows.items()}
    return windows, nbytes, {d: _tail_bits(model, None, w, prefix) / nbytes[d] for d, w in windows.items()}


def _save(job: Any, plugin: Any, base: Any, losses: list[float], cpu_s: float, argv: list[str]) -> None:
    """Write the plug-in as a brick (replacing the previous checkpoint), its recipe and figures recorded."""
    from lmbricks.plugins.accelerate.brick import save_accelerate_brick

    measured = {"first_loss": losses[0], "last_loss": losses[-1], "steps": len(losses), "cpu_seconds": cpu_s,
                "objective": "KL(base || plug-in) on the logits", "prefix_weight": job.prefix_weight}  # fmt: skip
    recipe = {k: (str(v) if isinstance(v, Path) else list(map(str, v)) if isinstance(v, tuple) else v)
              for k, v in job.__dict__.items() if k != "force"}  # fmt: skip
    save_accelerate_brick(job.out, plugin, base, command=" ".join(["python", "scripts/accelerate_curve.py", *argv]),
                          recipe=recipe, measured=measured, force=True)  # fmt: skip


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    for name, kind, default in (("ratio", int, 2), ("layer", int, 6), ("steps", int, 90), ("batch-size", int, 2),
                                ("lr", float, 3e-3), ("prefix-weight", float, 1.0), ("windows", int, 6)):  # fmt: skip
        p.add_argument(f"--{name}", type=kind, default=default)
    p.add_argument("--eval-at", default="0,30,60,90")
    a = p.parse_args(argv)

    import torch

    from lmbricks.adapters.base import base_model
    from lmbricks.nn.load import load_model
    from lmbricks.plugins.accelerate.config import AccelerateTrainJob
    from lmbricks.plugins.accelerate.forward import split_point
    from lmbricks.plugins.accelerate.layers import AcceleratePlugin
    from lmbricks.plugins.accelerate.pipeline import training_batches, training_texts
    from lmbricks.plugins.accelerate.train import distill

    torch.set_num_threads(1)
    torch.manual_seed(0)
    log = open(a.out.with_suffix(".progress.log"), "a", buffering=1)  # noqa: SIM115 (the run's progress log)
    job = AccelerateTrainJob(model="smollm2-135m-instruct", ratio=a.ratio, out=a.out, layer=a.layer, steps=a.steps,
                             batch_size=a.batch_size, lr=a.lr, prefix_weight=a.prefix_weight)  # fmt: skip
    base, texts = base_model(job.model), training_texts(job)
    model, tok = load_model(base.path, dtype=torch.bfloat16)
    batches = training_batches(tok, texts, job)
    P = split_point(256, a.ratio, 64)
    windows, nbytes, plain = _held_out(model.eval(), tok, a.windows, P)
    plugin = AcceleratePlugin(model.cfg.hidden_size, a.ratio, a.layer, 256)
    curve: list[dict[str, Any]] = []
    losses: list[float] = []
    evals = {int(s) for s in a.eval_at.split(",")}
    t0 = time.process_time()

    def checkpoint(step: int) -> None:
        row: dict[str, Any] = {"step": step, "loss": losses[-1] if losses else None,
                               "cpu_s": round(time.process_time() - t0, 1)}  # fmt: skip
        for d, w in windows.items():
            row[d] = {"plain": plain[d], "plugin": _tail_bits(model, plugin, w, P) / nbytes[d]}
        curve.append(row)
        print("EVAL", json.dumps(row), file=log)
        a.out.with_suffix(".curve.json").write_text(json.dumps({"args": vars(a) | {"out": a.out.name}, "curve": curve}))
        if losses:
            _save(job, plugin, base, losses, row["cpu_s"], argv)
            print("saved", step, file=log)

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        print(f"step {step} loss {loss:.4f} cpu {time.process_time() - t0:.0f}", file=log)
        if step in evals:
            checkpoint(step)

    checkpoint(0)
    distill(model, plugin, batches, job.keep_last, job.lr, job.prefix_weight, on_step)
    if len(losses) not in evals:
        checkpoint(len(losses))
    print("done", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
