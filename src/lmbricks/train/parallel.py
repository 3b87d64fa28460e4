"""Layouts: how the processes of a run share the model (``parallel:`` in the training config).

A :class:`Layout` is what the loop asks at the few places where layouts differ: sharding the
model before the optimizer is made, wrapping the objective, gradient synchronisation over
micro-batches, clipping by the global norm, and the whole model and optimizer state a checkpoint
stores. This module is the default, data parallelism (DDP under ``torchrun``; nothing when alone);
:mod:`lmbricks.train.fsdp` and :mod:`lmbricks.train.expert_parallel` are the sharded layouts.
:func:`make_layout` picks one from the config.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM
from lmbricks.train.config import TrainConfig
from lmbricks.train.distributed import DistInfo


class Layout:
    """Data parallel: every process holds the whole model; DDP averages gradients under torchrun.

    Args:
        info: this process's rank, world and device.
    """

    name = "ddp"
    reshards = False  # can resume a checkpoint written by another number of processes

    def __init__(self, info: DistInfo) -> None:
        self.info = info

    def share_load(self, lm: LM) -> None:
        """Balance each MoE layer's Switch loss on the load of all ranks (``parallel.global_load``)."""
        if self.info.distributed:
            import torch.distributed as dist

            for block in lm.layers:
                if getattr(block, "is_moe", False):
                    block.ffn.load_group = dist.group.WORLD  # type: ignore[union-attr]

    def shard(self, objective: nn.Module, bf16: bool) -> None:
        """Distribute the model (before the optimizer is made); data parallelism keeps it whole.

        Args:
            objective: the LossModule holding the LM.
            bf16: the run computes in bf16 (FSDP's mixed-precision policy).
        """
        del objective, bf16

    def wrap(self, objective: nn.Module) -> nn.Module:
        """The module the loop calls: DDP around the objective under torchrun, else the objective."""
        if not self.info.distributed:
            return objective
        from torch.nn.parallel import DistributedDataParallel as DDP

        lm = getattr(objective, "lm", None)
        return DDP(
            objective,
            device_ids=[self.info.device.index] if self.info.device.type == "cuda" else None,
            find_unused_parameters=isinstance(lm, LM) and lm.cfg.moe is not None,  # unused experts in a step
        )

    def accumulate(self, net: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        """Context of one micro-batch's forward and backward; gradients synchronise when ``sync``."""
        if sync or not self.info.distributed:
            return nullcontext()
        return net.no_sync()  # type: ignore[operator]

    def reduce_gradients(self, model: LM) -> None:
        """Finish the gradient reduction after the last micro-batch (DDP has already)."""
        del model

    def clip(self, model: LM, max_norm: float) -> Tensor:
        """Clip all gradients to the global norm ``max_norm``; returns the norm before clipping ()."""
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def full_model(self, model: LM) -> LM | None:
        """The whole model on the main process for the checkpoint (None elsewhere)."""
        return model if self.info.is_main else None

    def optimizer_state(self, model: LM, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The optimizer state written to ``optimizer.pt`` (main process); None when shards hold it."""
        del model
        return optimizer.state_dict() if self.info.is_main else None

    def save_shards(self, model: LM, optimizer: torch.optim.Optimizer, dest: Path) -> Path | None:
        """Write sharded state into ``dest`` on every process (FSDP: DCP); None when there is none."""
        del model, optimizer, dest
        return None

    def load_optimizer(self, model: LM, optimizer: torch.optim.Optimizer, ckpt: Path) -> None:
        """Load the optimizer state of checkpoint ``ckpt``."""
        del model
        from lmbricks.train.checkpoint import load_state_file

        optimizer.load_state_dict(load_state_file(ckpt, "optimizer.pt"))


def make_layout(cfg: TrainConfig, info: DistInfo) -> Layout:
    """The layout ``cfg.parallel`` names, for this process; one process alone holds everything.

    Raises:
        ConfigError: the world does not fit the layout (expert ranks must divide it).
    """
    if not info.distributed:
        return Layout(info)
    if cfg.parallel.fsdp:
        from lmbricks.train.fsdp import FSDPLayout

        return FSDPLayout(info)
    if cfg.parallel.experts:
        from lmbricks.train.expert_parallel import ExpertLayout

        return ExpertLayout(info, cfg.parallel.experts)
    return Layout(info)


def whole_model(cfg: LMConfig, state: dict[str, Tensor]) -> LM:
    """A fresh LM of ``cfg`` holding ``state`` (a full state dict, on the CPU), built without drawing
    from the random generators (an uninterrupted run and a resumed one stay identical)."""
    with torch.random.fork_rng(devices=[]):
        full = LM(cfg)
    full.load_state_dict(state)
    return full
