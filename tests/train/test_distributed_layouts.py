"""The same model, whatever the layout: a tiny MoE trained by 1, 2 or 4 gloo processes under DDP,
FSDP2 or expert parallelism (alone or with data parallelism) gives the single process's loss curve
and final weights, for the same global batch; sharded checkpoints resume on another world size."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_ddp import MOE
from tests.once import once_per_run
from train_helpers import CLI, cli_env, losses, write_config

from lmbricks.nn import load_model

DROPLESS = MOE  # 2 layers, hidden 32, 4 experts top-2, dropless
# capacity drops pairs, and the aux-loss-free bias moves with the global expert counts
CAPACITY = {
    **DROPLESS,
    "moe": {
        "num_experts": 4,
        "top_k": 2,
        "intermediate_size": 32,
        "capacity_factor": 1.0,
        "router": "sigmoid_topk",
        "bias_update_rate": 0.01,
        "aux_loss": "none",
    },
}
STEPS = 4
STRONG = {"aux_loss_coef": 1.0, "z_loss_coef": 1e-3}


def _config(tmp: Path, corpus: Path, model: dict[str, Any], parallel: Any, **extra: Any) -> Path:
    # global batch 8 = 4 micro-batches of 2 whatever the world (1, 2 or 4 per process)
    if parallel is not None:
        extra["parallel"] = parallel
    name = "".join(c for c in f"{parallel}{sorted(extra)}" if c.isalnum())
    return write_config(
        tmp / f"{name}.yaml", corpus, model=model, steps=STEPS, checkpoint_every=2, keep_checkpoints=2, **extra
    )


def _train(cfg: Path, out: Path, procs: int, *flags: str) -> None:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m"]
    cmd = [*CLI, "train"] if procs == 1 else [*launch, "lmbricks.cli.main", "train"]
    subprocess.run([*cmd, str(cfg), "-o", str(out), "-q", *flags], check=True, env=cli_env(), timeout=240)


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    model, _ = load_model(run / "checkpoints" / f"step-{step:06d}")
    return {**model.state_dict()}


def _assert_same_run(got: Path, want: Path) -> None:
    a, b = losses(want), losses(got)
    assert len(a) == len(b) == STEPS
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)
    w_got, w_want = _weights(got, STEPS), _weights(want, STEPS)
    assert w_got.keys() == w_want.keys()
    for name, p in w_want.items():
        torch.testing.assert_close(w_got[name], p, atol=1e-5, rtol=1e-4, msg=name)
    moved = _weights(want, 2)  # training moved the weights: the comparison is not vacuous
    assert any(float((p - moved[n]).abs().max()) > 1e-3 for n, p in w_want.items())


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> dict[str, Path]:
    """The one-process reference runs: dropless softmax top-2, and capacity + aux-loss-free sigmoid.

    Trained once per test run: under pytest-xdist this module's tests land on both workers, and each
    worker's own module fixture trained the four runs again (every worker's corpus is the same text).
    """

    def train_all(tmp: Path) -> dict[str, str]:
        runs = {}
        for kind, model in (("dropless", DROPLESS), ("capacity", CAPACITY)):
            _train(_config(tmp, corpus, model, None), tmp / kind, 1)
            runs[kind] = str(tmp / kind)
        for kind, micro in (("one_micro_batch", 8), ("two_micro_batches", 4)):  # a strong Switch loss
            _train(_config(tmp, corpus, DROPLESS, None, micro_batch_size=micro, moe_loss=STRONG), tmp / kind, 1)
            runs[kind] = str(tmp / kind)
        return runs

    return {kind: Path(run) for kind, run in once_per_run(tmp_path_factory, "distributed_single", train_all).items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "parallel", "procs"),
    [
        ("dropless", "fsdp", 2),
        ("dropless", {"experts": 2}, 2),
        ("dropless", {"experts": 4}, 4),
        ("dropless", {"experts": 2}, 4),  # two expert groups of two, data parallel across them
        ("capacity", {"experts": 2}, 2),
        ("capacity", "fsdp", 2),
    ],
    ids=["fsdp2", "experts2", "experts4", "experts2x2", "capacity-experts2", "capacity-fsdp2"],
)
def test_layout_equals_single_process(
    tmp_path: Path, corpus: Path, single: dict[str, Path], kind: str, parallel: Any, procs: int
) -> None:
    model = DROPLESS if kind == "dropless" else CAPACITY
    out = tmp_path / "run"
    _train(_config(tmp_path, corpus, model, parallel), out, procs)
    _assert_same_run(out, single[kind])
    if parallel == "fsdp":  # each process wrote its shards with DCP
        assert list((out / "checkpoints" / f"step-{STEPS:06d}" / "dcp").glob("*.distcp"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parallel", "before", "after"), [("fsdp", 2, 4), ({"experts": 2}, 4, 2)], ids=["fsdp", "experts"]
)
def test_resume_on_another_world_size(
    tmp_path: Path, corpus: Path, single: dict[str, Path], parallel: Any, before: int, after: int
) -> None:
    cfg = _config(tmp_path, corpus, DROPLESS, parallel)
    out = tmp_path / "run"
    _train(cfg, out, before)
    shutil.rmtree(out / "checkpoints" / f"step-{STEPS:06d}")  # as if killed after step 2's checkpoint
    _train(cfg, out, after, "--resume")
    _assert_same_run(out, single["dropless"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parallel", "procs"),
    [({"global_load": True}, 2), ({"experts": 2, "global_load": True}, 2), ({"fsdp": True, "global_load": True}, 2)],
    ids=["ddp2", "experts2", "fsdp2"],
)
def test_global_load_equals_one_micro_batch_of_all_ranks(
    tmp_path: Path, corpus: Path, single: dict[str, Path], parallel: Any, procs: int
) -> None:
    # each of 2 ranks runs one micro-batch of 4; the Switch loss sees the load of all 8 sequences,
    # as one process running the whole batch as one micro-batch
    out = tmp_path / "run"
    _train(_config(tmp_path, corpus, DROPLESS, parallel, micro_batch_size=4, moe_loss=STRONG), out, procs)
    _assert_same_run(out, single["one_micro_batch"])
    # the load's scope matters: one process balancing two micro-batches of 4 apart trains otherwise
    a, b = _weights(single["one_micro_batch"], STEPS), _weights(single["two_micro_batches"], STEPS)
    assert any(float((a[n] - b[n]).abs().max()) > 1e-4 for n in a if ".router." in n)
