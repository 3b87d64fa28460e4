"""``parallel: {experts: R}``: expert parallelism over groups of R ranks, data parallel across groups.

The world of W processes is cut into W / R **expert groups** of R consecutive ranks
(``[0, R)``, ``[R, 2R)``, ...: one node's GPUs when R fits a node). Rank ``q`` of a group holds experts
``[q E/R, (q+1) E/R)`` of every MoE layer (:class:`lmbricks.moe.expert_parallel.ShardedExperts`);
tokens travel to their experts inside the group by all-to-all. The ranks holding the same experts
(``q, q + R, q + 2R, ...``) form that share's **data-parallel group**.

Gradients, after the last micro-batch (the loss of each process is the mean over its tokens, so
the single-process gradient is the mean over processes):
  - non-expert parameters (attention, norms, embedding, routers): summed over all W ranks, / W;
  - expert parameters already hold the sum over their expert group (the backward of the all-to-all
    brings every rank's contribution home); summed over their data-parallel group, / W.
Clipping uses the global norm: the replicated parameters' squares once, the expert shards' squares
summed over the expert group.

Checkpoints store the whole model and the whole optimizer state (expert tensors gathered along
their first axis) in the single-process format, so any layout, on any number of processes, resumes
them; this layout slices its experts back out on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.moe.expert_parallel import ShardedExperts
from lmbricks.moe.experts import Experts
from lmbricks.nn.model import LM
from lmbricks.train.distributed import DistInfo
from lmbricks.train.parallel import Layout, whole_model


class ExpertLayout(Layout):
    """Expert parallel over groups of ``ranks`` processes (see the module docstring).

    Args:
        info: this process.
        ranks: R, the size of an expert group; it must divide the world.

    Raises:
        ConfigError: R does not divide the number of processes.
    """

    name = "experts"
    reshards = True

    def __init__(self, info: DistInfo, ranks: int) -> None:
        super().__init__(info)
        w = info.world
        if w % ranks:
            raise ConfigError(f"parallel.experts ({ranks}) must divide the number of processes ({w})")
        self.ranks, self.index = ranks, info.rank % ranks
        self.expert_group: Any = None
        self.replica_group: Any = None
        if info.distributed:  # every process creates every group, in the same order
            for g in range(w // ranks):
                group = dist.new_group(list(range(g * ranks, (g + 1) * ranks)))
                if info.rank // ranks == g:
                    self.expert_group = group
            for q in range(ranks):
                group = dist.new_group(list(range(q, w, ranks)))
                if self.index == q:
                    self.replica_group = group
        self.sharded: list[ShardedExperts] = []

    def shard(self, objective: nn.Module, bf16: bool) -> None:
        """Replace each MoE layer's Experts by this rank's share (the model is identical on all ranks)."""
        del bf16
        lm = objective.lm
        assert isinstance(lm, LM)
        for i, block in enumerate(lm.layers):
            experts = getattr(block.ffn, "experts", None) if getattr(block, "is_moe", False) else None
            if experts is None:
                continue
            if type(experts) is not Experts:  # (a ShardedExperts is sharded already)
                raise ConfigError(f"parallel.experts: layer {i}'s experts ({type(experts).__name__}) cannot be sharded")
            sharded = ShardedExperts(experts, self.expert_group, self.index, self.ranks)
            block.ffn.experts = sharded  # type: ignore[union-attr]
            self.sharded.append(sharded)
        if not self.sharded:
            raise ConfigError("parallel.experts: the model has no MoE layer")

    def wrap(self, objective: nn.Module) -> nn.Module:
        return objective  # gradients are reduced by reduce_gradients

    def accumulate(self, net: nn.Module, sync: bool) -> Any:
        del net, sync
        from contextlib import nullcontext

        return nullcontext()

    def _expert_ids(self) -> set[int]:
        return {id(p) for s in self.sharded for p in s.parameters()}

    def reduce_gradients(self, model: LM) -> None:
        """The mean gradient over all processes (see the module docstring)."""
        if not self.info.distributed:
            return
        experts = self._expert_ids()
        params = [p for p in model.parameters() if p.requires_grad]
        _sum_grads([p for p in params if id(p) not in experts], None, self.info.world)
        _sum_grads([p for p in params if id(p) in experts], self.replica_group, self.info.world)

    def clip(self, model: LM, max_norm: float) -> Tensor:
        experts = self._expert_ids()
        grads = [p.grad for p in model.parameters() if p.grad is not None and id(p) not in experts]
        shard = [p.grad for p in model.parameters() if p.grad is not None and id(p) in experts]
        sq = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
        sq_experts = torch.stack([g.detach().float().pow(2).sum() for g in shard]).sum()
        if self.info.distributed:
            dist.all_reduce(sq_experts, group=self.expert_group)
        norm = (sq + sq_experts).sqrt()
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # as torch.nn.utils.clip_grad_norm_
        for g in [*grads, *shard]:
            g.mul_(scale.to(g.dtype))
        return norm

    def _gather(self, t: Tensor) -> Tensor:
        """An expert shard (E/R, ...) -> the whole (E, ...) tensor on the main process (its group's
        first rank); the other ranks of the first expert group send theirs, the other groups keep
        their shard (they hold a replica of the same experts)."""
        if not self.info.distributed or self.ranks == 1 or self.info.rank >= self.ranks:
            return t
        parts = [torch.empty_like(t) for _ in range(self.ranks)] if self.info.is_main else None
        dist.gather(t.contiguous(), parts, group=self.expert_group, group_dst=0)
        return torch.cat(parts) if parts is not None else t

    def full_model(self, model: LM) -> LM | None:
        """Expert shards gathered by the first expert group; the whole model on the main process."""
        experts = self._expert_ids()
        state = {}
        for name, p in model.state_dict(keep_vars=True).items():
            t = self._gather(p.detach()) if id(p) in experts else p.detach()
            state[name] = t.cpu()
        return whole_model(model.cfg, state) if self.info.is_main else None

    def optimizer_state(self, model: LM, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The single-process optimizer state: expert moments gathered along their first axis."""
        del model
        state = optimizer.state_dict()  # its per-parameter dicts are the live state: replace, never edit
        for i in _expert_indices(optimizer, self._expert_ids()):
            entry = state["state"].get(i, {})
            state["state"][i] = {k: self._gather(v) if _sharded(v) else v for k, v in entry.items()}
        return state if self.info.is_main else None

    def load_optimizer(self, model: LM, optimizer: torch.optim.Optimizer, ckpt: Path) -> None:
        """A single-process optimizer state with this rank's experts sliced out."""
        from lmbricks.train.checkpoint import load_state_file

        del model
        state = load_state_file(ckpt, "optimizer.pt")
        local = self.sharded[0].local
        cut = slice(self.index * local, (self.index + 1) * local)
        for i in _expert_indices(optimizer, self._expert_ids()):
            entry = state["state"].get(i, {})
            state["state"][i] = {k: v[cut].clone() if _sharded(v) else v for k, v in entry.items()}
        optimizer.load_state_dict(state)


def _sharded(v: Any) -> bool:
    """An expert parameter's per-expert optimizer tensor (AdamW's moments; not its scalar step)."""
    return isinstance(v, Tensor) and v.dim() > 0


def _expert_indices(optimizer: torch.optim.Optimizer, experts: set[int]) -> list[int]:
    """Positions (the optimizer state's keys) of the expert parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return [i for i, p in enumerate(params) if id(p) in experts]


def _sum_grads(params: list[nn.Parameter], group: Any, divisor: int) -> None:
    """grad <- (sum of grad over ``group``) / divisor, for all ``params`` in one flat all-reduce."""
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat.div_(divisor)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).clone()
        offset += n
