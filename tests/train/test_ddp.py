"""Two gloo DDP processes on CPU train exactly like one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import CLI, cli_env, losses, write_config

from lmbricks.nn import load_model

MOE = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 64,
    "moe": {"num_experts": 4, "top_k": 2, "intermediate_size": 32},
}


@pytest.mark.slow
def test_two_process_gloo_equals_single_process(tmp_path: Path, corpus: Path) -> None:
    # global batch 8 = 4 micro-batches of 2; one process runs all 4, each of two runs 2
    cfg = write_config(tmp_path / "c.yaml", corpus, model=MOE, steps=6, checkpoint_every=3)
    env = cli_env()
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([*CLI, "train", str(cfg), "-o", str(single), "-q"], check=True, env=env, timeout=300)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "lmbricks.cli.main",
            "train",
            str(cfg),
            "-o",
            str(ddp),
            "-q",
        ],
        check=True,
        env=env,
        timeout=300,
    )
    a, b = losses(single), losses(ddp)
    assert len(a) == len(b) == 6
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)
    m1, _ = load_model(single / "checkpoints" / "step-000006")
    m2, _ = load_model(ddp / "checkpoints" / "step-000006")
    for (name, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        torch.testing.assert_close(p2, p1, atol=1e-5, rtol=1e-4, msg=name)
    assert any((p1 - p0).abs().max() > 1e-3 for p1, p0 in zip(m1.parameters(), _fresh(single), strict=True))


def _fresh(run: Path) -> list[torch.Tensor]:
    """Weights after 3 steps, to show training moved them (the comparison is not vacuous)."""
    m, _ = load_model(run / "checkpoints" / "step-000003")
    return list(m.parameters())
