"""A run killed with SIGKILL and resumed gives the bit-identical loss trajectory (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from train_helpers import CLI, cli_env, losses, write_config

MODEL = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 64,
    # the noisy router draws random numbers while training: resuming must restore the RNG too
    "moe": {
        "num_experts": 4,
        "top_k": 2,
        "intermediate_size": 32,
        "router": "noisy_topk",
        "aux_loss": "importance_load",
    },
}


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, corpus: Path) -> None:
    steps = 40
    cfg = write_config(
        tmp_path / "c.yaml",
        corpus,
        model=MODEL,
        steps=steps,
        checkpoint_every=4,
        averaging={"ema_decay": 0.9},
    )
    env = cli_env()
    ref = tmp_path / "ref"
    subprocess.run([*CLI, "train", str(cfg), "-o", str(ref), "-q"], check=True, env=env, timeout=300)

    run = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", str(cfg), "-o", str(run), "-q"], env=env)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "step-000008").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(losses(run))
    assert killed_at < steps, "the run finished before SIGKILL; the test proves nothing"

    subprocess.run([*CLI, "train", str(cfg), "-o", str(run), "--resume", "-q"], check=True, env=env, timeout=300)
    assert losses(run) == losses(ref)  # exact float equality, every step
    steps_logged = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))
    # EMA is configured: both runs must have written it, and the resumed one byte for byte the same
    ema_ref, ema_run = ref / "ema" / "model.safetensors", run / "ema" / "model.safetensors"
    assert ema_ref.exists(), f"ema_decay is set but {ema_ref} was not written"
    assert ema_run.exists(), f"ema_decay is set but the resumed run wrote no {ema_run}"
    assert ema_run.read_bytes() == ema_ref.read_bytes()
