"""Expert parallelism: each rank of a group holds a contiguous share of an MoE layer's experts.

:class:`ShardedExperts` is a drop-in for :class:`~lmbricks.moe.experts.Experts` inside an
:class:`~lmbricks.moe.layer.MoELayer`: the router, the capacity and the dispatch plan stay local to
each rank (they see that rank's tokens only, exactly as one process running the same micro-batch),
and only the expert computation travels:

  1. the per-expert pair counts are exchanged first (one ``all_to_all_single`` of E integers),
  2. the routed rows, already grouped by expert (hence by destination rank, experts being
     contiguous per rank), go to their experts' rank (``all_to_all_single`` with variable splits),
  3. the receiving rank reorders them expert-major, runs its experts on contiguous slices,
  4. the outputs return by the reverse exchange and are combined with the gates on the token's rank.

Both exchanges are differentiable (the backward of an all-to-all is the all-to-all with the splits
swapped), so expert weights receive the gradient of every rank's loss that routed to them; the
training loop then reduces expert gradients over the ranks holding the same experts only
(:mod:`lmbricks.train.expert_parallel`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd import Function

from lmbricks.errors import ConfigError
from lmbricks.moe.dispatch import DispatchPlan, choose_impl
from lmbricks.moe.expert_ffn import expert_ffn_grouped, expert_ffn_loop
from lmbricks.moe.experts import Experts
from lmbricks.moe.rows import combine_rows, gather_rows

_AS_BYTES = (torch.bfloat16, torch.float16)  # gloo lacks 16-bit all-to-all: their bytes travel as uint8


def _exchange(x: Tensor, out_splits: list[int], in_splits: list[int], group: Any) -> Tensor:
    """Rows of ``x`` (sum(in_splits), ...) sent in blocks to each rank; (sum(out_splits), ...) received."""
    out = x.new_empty(sum(out_splits), *x.shape[1:])
    send, recv = x.contiguous(), out
    if x.dtype in _AS_BYTES and x.dim() > 1:  # bit-exact: the last axis as twice as many bytes
        send, recv = send.view(torch.uint8), out.view(torch.uint8)
    dist.all_to_all_single(recv, send, out_splits, in_splits, group=group)
    return out


class _AllToAll(Function):
    """Differentiable variable-split all-to-all of rows: the backward swaps the splits."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out_splits: list[int], in_splits: list[int], group: Any) -> Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        return _exchange(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        out_splits, in_splits = ctx.splits
        return _exchange(grad, in_splits, out_splits, ctx.group), None, None, None


def all_to_all_rows(x: Tensor, out_splits: list[int], in_splits: list[int], group: Any = None) -> Tensor:
    """Send ``x``'s rows in blocks of ``in_splits`` to ranks 0..R-1 of ``group``; receive ``out_splits``.

    Args:
        x: (sum(in_splits), ...) rows, block r for rank r.
        out_splits: rows this rank receives from each rank.
        in_splits: rows this rank sends to each rank.
        group: the process group (None: the default group).

    Returns:
        (sum(out_splits), ...) rows, block r from rank r; differentiable.
    """
    return _AllToAll.apply(x, out_splits, in_splits, group)


class ShardedExperts(Experts):
    """Experts ``[index * local, (index + 1) * local)`` of ``num_experts`` (``local = num_experts / size``).

    The parameters have the names and layout of :class:`~lmbricks.moe.experts.Experts` with the
    first axis cut to this rank's experts, so a state dict gathers back along axis 0. ``forward``
    is Experts' (same arguments, autocast handling); only the computation of the routed pairs
    differs: they travel to their experts' rank and back (every rank of the group must call it
    together).

    Args:
        experts: the full Experts (identical on every rank of the group); this rank's slice is copied.
        group: the expert-parallel process group (None: the default group).
        index: this rank's position in ``group``.
        size: the group's size R; ``num_experts`` must be a multiple of it.
    """

    def __init__(self, experts: Experts, group: Any, index: int, size: int) -> None:
        nn.Module.__init__(self)  # not Experts.__init__: only this rank's slice is allocated
        if experts.num_experts % size:
            raise ConfigError(f"parallel.experts: {experts.num_experts} experts cannot be split over {size} ranks")
        self.num_experts, self.hidden_size = experts.num_experts, experts.hidden_size
        self.intermediate_size, self.activation, self.impl = experts.intermediate_size, experts.activation, experts.impl
        self.group, self.index, self.size = group, index, size
        self.local = experts.num_experts // size
        cut = slice(index * self.local, (index + 1) * self.local)
        w_in = nn.Parameter(experts.w_in.detach()[cut].clone())  # (E/R, H, N)
        if experts.gated:  # registered in the order of Experts: the input projection, then down
            self.gate_up = w_in
        else:
            self.up = w_in
        self.down = nn.Parameter(experts.down.detach()[cut].clone())  # (E/R, I, H)

    def _combine(self, x: Tensor, weights: Tensor, plan: DispatchPlan, w_in: Tensor, w_out: Tensor) -> Tensor:
        """(T, H) weighted sum over the plan's pairs, computed on the ranks holding their experts."""
        r, n = self.size, self.local
        sent = plan.tokens_per_expert.to(torch.long)  # (E,) my pairs per global expert
        got = torch.empty_like(sent)  # (R * E/R,) [source rank, my local expert]
        dist.all_to_all_single(got, sent, group=self.group)  # the split sizes travel first
        send_splits = sent.view(r, n).sum(1).tolist()
        recv_counts = got.view(r, n)
        rows = all_to_all_rows(gather_rows(x, plan), recv_counts.sum(1).tolist(), send_splits, self.group)
        # received rows are source-major; make them expert-major (sources in rank order within an expert)
        expert_of_row = torch.arange(n, device=x.device).repeat(r).repeat_interleave(got)  # (S_recv,)
        perm = torch.argsort(expert_of_row, stable=True)
        counts = recv_counts.sum(0)  # (E/R,)
        xs = rows.index_select(0, perm)
        if choose_impl(self.impl, xs, int(xs.shape[0])) == "grouped":
            ys = expert_ffn_grouped(xs, w_in, w_out, counts, self.activation)
        else:
            ys = expert_ffn_loop(xs, w_in, w_out, counts.tolist(), self.activation)
        ys = ys.index_select(0, torch.argsort(perm))  # back to source-major
        back = all_to_all_rows(ys, send_splits, recv_counts.sum(1).tolist(), self.group)  # (S, H) my pairs
        return combine_rows(back, weights, plan, overwrite=True)
