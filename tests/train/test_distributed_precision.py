"""FSDP's mixed-precision policy follows the run's precision: bf16 blocks compute on bf16 copies of
fp32 master shards; fp32 runs keep fp32 (one gloo process, in this test process)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from lmbricks.nn import LM, LMConfig
from lmbricks.train.distributed import DistInfo
from lmbricks.train.fsdp import FSDPLayout
from lmbricks.train.objective import LossModule


@pytest.fixture
def one_process_group():  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_fsdp_blocks_compute_in_the_runs_precision(one_process_group: None, bf16: bool, dtype: torch.dtype) -> None:
    del one_process_group
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=64, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=32)
    objective = LossModule(LM(cfg), 0.0, 0.0)
    FSDPLayout(DistInfo(rank=0, world=1, device=torch.device("cpu"))).shard(objective, bf16)
    seen: list[torch.dtype] = []
    objective.lm.layers[0].attn.qkv.register_forward_hook(lambda m, _i, _o: seen.append(m.weight.dtype))
    loss, _ = objective(torch.randint(0, 64, (2, 8)))
    loss.backward()
    assert seen == [dtype]
    master = objective.lm.layers[0].attn.qkv.weight
    assert master.dtype == torch.float32 and type(master).__name__ == "DTensor"  # sharded fp32 master
    assert master.grad is not None and master.grad.dtype == torch.float32
