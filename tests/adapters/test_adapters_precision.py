"""precision of a brick's training: fp32 reproduces main's run bit for bit; auto is decided by
lmbricks.runtime, autocasts where it says bf16 and is recorded in the brick's lmbricks.json."""

from __future__ import annotations

import json
from pathlib import Path

from lmbricks.adapters import make_config, train_brick
from lmbricks.runtime import resolve_precision

TEXTS = ["the quick brown fox jumps over the lazy dog. " * 8, "def main(): return 1 + 2 * x\n" * 8] * 4
#: (loss_first, loss_last) of this run on main at 9b5d578, before ``auto`` meant bf16 on CPUs.
FP32_LOSSES = (5.965511798858643, 5.884342956542969)


def _train(base: Path, out: Path, precision: str) -> tuple[tuple[float, float], dict[str, object]]:
    cfg = make_config(steps=6, seq_len=32, lr=1e-2, rank=4, eval_bytes=0, precision=precision)
    info = train_brick(base, out, cfg, texts=TEXTS)
    record = info.record["bricks"]["adapter"]
    return (record["loss_first"], record["loss_last"]), json.loads((out / "lmbricks.json").read_text())


def test_fp32_brick_training_reproduces_main(tiny_llama: Path, tmp_path: Path) -> None:
    losses, meta = _train(tiny_llama, tmp_path / "fp32", "fp32")
    assert losses == FP32_LOSSES
    assert meta["recipe"]["precision"] == "fp32"


def test_auto_brick_training_is_recorded(tiny_llama: Path, tmp_path: Path) -> None:
    resolved = resolve_precision("auto", "cpu")
    losses, meta = _train(tiny_llama, tmp_path / "auto", "auto")
    assert meta["recipe"]["precision"] == resolved and meta["recipe"]["train"]["precision"] == "auto"
    if resolved == "bf16":  # autocast rounds the matmuls: close to the fp32 run, not equal to it
        assert losses != FP32_LOSSES and abs(losses[0] - FP32_LOSSES[0]) < 0.01
    else:
        assert losses == FP32_LOSSES
