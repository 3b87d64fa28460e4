"""The training objective: the LM loss plus the MoE auxiliary losses, as one module DDP can wrap."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmbricks.nn.ffn import take_activation_l1, track_activation_l1
from lmbricks.nn.model import LM
from lmbricks.train.stats import StepStats


class LossModule(nn.Module):
    """The LM plus its training objective, so DDP wraps a single forward.

    ``forward(ids)`` returns (total loss, :class:`StepStats` of the micro-batch). ``ids`` is (B, T)
    text, or (B, 3, T) packed instruction-tuning blocks (ids, labels, segment ids; see
    :mod:`lmbricks.sft.pack`): then only response tokens carry loss and packed examples do not
    attend to each other.

    ``activation_l1_coef`` (settable between steps, as a schedule does) adds that factor times the
    mean |act(gate)| of the dense FFNs (``lmbricks.nn.ffn``), read from the same forward; it is
    logged as the auxiliary ``activation_l1``. At 0 nothing is tracked.
    """

    def __init__(self, lm: LM, aux_loss_coef: float, z_loss_coef: float, activation_l1_coef: float = 0.0) -> None:
        super().__init__()
        self.lm = lm
        self.aux_coef, self.z_coef = aux_loss_coef, z_loss_coef
        self.activation_l1_coef = activation_l1_coef
        self._tracking = False
        self.aux_names: list[str] = []
        if lm.cfg.moe is not None:
            m = lm.cfg.moe_config()
            self.aux_names = {"switch": ["switch"], "importance_load": ["importance", "load"], "none": []}[m.aux_loss]
            self.aux_names += ["z"] if m.z_loss else []

    def forward(self, ids: Tensor) -> tuple[Tensor, StepStats]:
        """(B, T) or (B, 3, T) ids -> (the loss to minimise, the micro-batch's StepStats)."""
        penalise = self.activation_l1_coef > 0
        if penalise != self._tracking:
            track_activation_l1(self.lm, penalise)
            self._tracking = penalise
        if ids.dim() == 3:  # (B, 3, T) instruction-tuning blocks
            ids, labels, docs = ids.unbind(1)
            out = self.lm.loss(ids, labels, doc_ids=docs)
        else:
            out = self.lm.loss(ids)
        loss = out.loss
        lm_loss = loss.detach().float()
        l1 = take_activation_l1(self.lm) if penalise else None
        extra = {} if l1 is None else {"activation_l1": l1.detach()}
        if l1 is not None:
            loss = loss + self.activation_l1_coef * l1
        if not out.aux:
            empty = loss.new_zeros(0, dtype=torch.float32)
            return loss, StepStats(lm_loss, extra, empty, empty.reshape(0, 0))
        n = len(out.aux)
        sums = {k: torch.stack([a.losses[k].float() for a in out.aux]).sum() for k in self.aux_names}
        total = loss
        for name, s in sums.items():
            total = total + (self.z_coef if name == "z" else self.aux_coef) * s / n  # mean over MoE layers
        stats = StepStats(
            lm_loss,
            {name: s.detach() for name, s in sums.items()} | extra,
            torch.stack([a.dropped_fraction.float() for a in out.aux]).detach(),  # (L_moe,)
            torch.stack([a.tokens_per_expert.float() for a in out.aux]).detach(),  # (L_moe, E)
        )
        return total, stats
