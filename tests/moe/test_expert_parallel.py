"""Expert parallelism: an MoE layer whose experts are spread over 2 or 4 gloo processes computes,
on each process's tokens, what one process computes running the same micro-batches in turn:
outputs, router gradients (summed over processes) and each process's share of expert gradients."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmbricks.moe import MoEConfig, build_moe
from lmbricks.moe.expert_parallel import ShardedExperts, all_to_all_rows

T, H = 24, 16  # tokens per process, width


def _layer(capacity: float | None, activation: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = MoEConfig(
        hidden_size=H,
        intermediate_size=8,
        num_experts=4,
        top_k=2,
        capacity_factor=capacity,
        drop_policy="position",
        activation=activation,
    )
    return build_moe(cfg, impl="loop")


def _reference(world: int, capacity: float | None, activation: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One process: each process's micro-batch in turn, gradients summed."""
    layer = _layer(capacity, activation)
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(world, T, H, generator=gen)
    gs = torch.randn(world, T, H, generator=gen)
    ys = []
    for r in range(world):
        y, aux = layer(xs[r])
        (y * gs[r]).sum().add(aux.losses["switch"]).backward()
        ys.append(y.detach())
    return torch.stack(ys), {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, capacity: float | None, activation: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ref_y, ref_grads = _reference(world, capacity, activation)
        layer = _layer(capacity, activation)
        layer.experts = ShardedExperts(layer.experts, None, rank, world)  # type: ignore[assignment]
        gen = torch.Generator().manual_seed(1)
        xs, gs = torch.randn(world, T, H, generator=gen), torch.randn(world, T, H, generator=gen)
        y, aux = layer(xs[rank])
        (y * gs[rank]).sum().add(aux.losses["switch"]).backward()
        torch.testing.assert_close(y, ref_y[rank], atol=1e-5, rtol=1e-5)
        local = 4 // world
        for name, p in layer.named_parameters():
            assert p.grad is not None, name
            grad = p.grad.clone()
            if name.startswith("experts."):
                want = ref_grads[name][rank * local : (rank + 1) * local]
            else:  # replicated parameters: each process holds its own tokens' share
                dist.all_reduce(grad)
                want = ref_grads[name]
            torch.testing.assert_close(grad, want, atol=1e-5, rtol=1e-4, msg=name)
        assert any(float(ref_grads[n].abs().max()) > 0 for n in ref_grads if n.startswith("experts."))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world", "capacity", "activation"),
    [(2, None, "swiglu"), (2, 1.0, "swiglu"), (4, None, "gelu"), (4, 0.5, "swiglu")],
)
def test_sharded_layer_equals_one_process(world: int, capacity: float | None, activation: str) -> None:
    mp.spawn(_worker, args=(world, _free_port(), capacity, activation), nprocs=world)


def _a2a_worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # rank r sends (r + 2q + 1) rows to rank q, each row tagged (source, destination): a rank's
        # send and receive splits differ (with r + q they were equal, and a backward that forgot to
        # swap them passed)
        send = [rank + 2 * q + 1 for q in range(world)]
        recv = [r + 2 * rank + 1 for r in range(world)]
        rows = torch.cat([torch.tensor([[rank, q]] * n, dtype=torch.bfloat16) for q, n in enumerate(send)])
        x = rows.clone().requires_grad_()
        out = all_to_all_rows(x, recv, send)
        want = torch.cat([torch.tensor([[r, rank]] * n, dtype=torch.bfloat16) for r, n in enumerate(recv)])
        assert torch.equal(out, want)
        (out.float() * (rank + 1)).sum().backward()  # d/dx: the destination's factor comes back
        assert x.grad is not None
        assert torch.equal(x.grad[:, 0], rows[:, 1].add(1).to(torch.bfloat16))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_to_all_rows_routes_blocks_and_gradients() -> None:
    mp.spawn(_a2a_worker, args=(3, _free_port()), nprocs=3)


def _load_worker(rank: int, world: int, port: int) -> None:
    from lmbricks.moe.losses import switch_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(world * 10, 4, generator=gen)
        indices = torch.randint(0, 4, (world * 10, 2), generator=gen)
        whole = logits.clone().requires_grad_()
        want = switch_loss(whole.softmax(-1), indices, 4)  # one process on every rank's tokens
        want.backward()
        mine = logits[rank * 10 : (rank + 1) * 10].clone().requires_grad_()
        got = switch_loss(mine.softmax(-1), indices[rank * 10 : (rank + 1) * 10], 4, group=dist.group.WORLD)
        got.backward()
        value, grad = got.detach().clone(), mine.grad.clone()  # type: ignore[union-attr]
        dist.all_reduce(value)
        torch.testing.assert_close(value / world, want.detach())  # the mean over ranks is the global loss
        # data parallelism averages gradients: each rank's share is the global gradient's rows x world
        torch.testing.assert_close(grad / world, whole.grad[rank * 10 : (rank + 1) * 10])  # type: ignore[index]
        local = switch_loss(logits[rank * 10 : (rank + 1) * 10].softmax(-1), indices[rank * 10 : (rank + 1) * 10], 4)
        assert not torch.allclose(local, got)  # without the group, f is this rank's load only
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_switch_loss_over_a_group_is_the_global_loss() -> None:
    mp.spawn(_load_worker, args=(2, _free_port()), nprocs=2)
