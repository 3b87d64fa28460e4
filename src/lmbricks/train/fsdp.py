"""``parallel: fsdp``: PyTorch FSDP2 (``fully_shard``) with sharded checkpoints (DCP).

Each transformer block is one FSDP unit and the objective (embedding, final norm, head) the root:
a process holds 1/world of every parameter, gradient and AdamW moment; a block's parameters are
gathered for its forward and backward and freed after, gradients are reduce-scattered in fp32.
Where the run computes in bf16 (``precision`` resolved by :func:`lmbricks.runtime.resolve_precision`),
the blocks gather bf16 copies of the fp32 master shards (``MixedPrecisionPolicy``).

Checkpoints: ``dcp/`` holds the model and optimizer shards written by every process with
``torch.distributed.checkpoint`` (DCP); on resume DCP reads them into whatever sharding the new
world has, so a run saved on N processes resumes on M. The checkpoint also holds the whole model
(gathered on the main process) as a Hugging Face directory, as every training checkpoint does.
"""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.nn.model import LM
from lmbricks.train.checkpoint import DCP_DIR
from lmbricks.train.distributed import barrier
from lmbricks.train.parallel import Layout, whole_model


class FSDPLayout(Layout):
    """FSDP2 over all processes (``fully_shard`` per block, then the root)."""

    name = "fsdp"
    reshards = True

    root: nn.Module

    def shard(self, objective: nn.Module, bf16: bool) -> None:
        """``fully_shard`` each block of ``objective.lm``, then ``objective`` itself (in place)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
        lm = objective.lm
        assert isinstance(lm, LM)
        for block in lm.layers:
            fully_shard(block, mp_policy=policy)
        fully_shard(objective, mp_policy=policy)  # embedding, final norm and the (tied) head
        self.root = objective

    def wrap(self, objective: nn.Module) -> nn.Module:
        return objective  # fully_shard changed it in place

    def accumulate(self, net: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        """Reduce-scatter gradients on the last micro-batch only (earlier ones accumulate unsharded)."""
        net.set_requires_gradient_sync(sync)  # type: ignore[operator]
        return nullcontext()

    def clip(self, model: LM, max_norm: float) -> Tensor:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        full = getattr(norm, "full_tensor", None)  # a DTensor over the shards
        return full() if full is not None else norm

    def full_model(self, model: LM) -> LM | None:
        """Gathered on the CPU of the main process (every process takes part)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.root, options=opts)
        if not self.info.is_main:
            return None
        return whole_model(model.cfg, {k.removeprefix("lm."): v for k, v in state.items() if isinstance(v, Tensor)})

    def optimizer_state(self, model: LM, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        del model, optimizer
        return None  # in dcp/

    def save_shards(self, model: LM, optimizer: torch.optim.Optimizer, dest: Path) -> Path | None:
        """Every process writes its model and optimizer shards into ``dest`` (DCP), then waits for all."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        del model
        if self.info.is_main:
            shutil.rmtree(dest, ignore_errors=True)  # a killed save's leftovers
        barrier(self.info)
        model_state, optim_state = get_state_dict(self.root, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(dest))
        barrier(self.info)
        return dest

    def load_optimizer(self, model: LM, optimizer: torch.optim.Optimizer, ckpt: Path) -> None:
        """Model and optimizer shards from ``ckpt/dcp``, resharded to this world by DCP."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        from lmbricks.errors import CheckpointError

        del model
        src = Path(ckpt) / DCP_DIR
        if not src.is_dir():
            raise CheckpointError(
                f"{src}: missing (the checkpoint was not written by parallel: fsdp on several processes)"
            )
        model_state, optim_state = get_state_dict(self.root, optimizer)
        dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(src))  # in place, resharded
        set_state_dict(self.root, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
