"""The output embedding (or head) matrix of a transplant, as pure functions of tensors and index maps.

Each output row ``j`` (a donor token id) is one of three kinds:

* **copied**: the model has the same token (``index[j] >= 0``): its row, bit for bit;
* **new**: the donor has a token at ``j`` the model lacks: initialised by ``omp``, ``mean`` or ``zero``
  (:mod:`lmbricks.tokens.omp`);
* **padding**: no donor token at ``j`` (rows beyond the tokenizer that a model config rounds up to).
  When the model has a padding row at the same id it is kept (so transplanting a model's own
  tokenizer returns the model unchanged); otherwise the row is zero.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

from lmbricks.tokens.omp import baseline_rows, omp_rows


@dataclass(frozen=True)
class RowPlan:
    """Where each output row comes from.

    Attributes:
        index: ``(R,)`` int64, the model row copied into each output row (-1: none).
        new: ``(N,)`` int64, the output rows of new tokens (ascending).
        anchors: ``(A,)`` int64, the output rows of shared tokens (ascending), OMP's dictionary.
    """

    index: torch.Tensor
    new: torch.Tensor
    anchors: torch.Tensor

    @property
    def copied(self) -> int:
        """Rows copied from the model (shared tokens and kept padding rows)."""
        return int((self.index >= 0).sum())


def plan_rows(
    matched: torch.Tensor, donor_ids: Collection[int], model_ids: Collection[int], model_rows: int
) -> RowPlan:
    """Classify the output rows (see the module docstring).

    Args:
        matched: ``(R,)`` from :func:`~lmbricks.tokens.spelling.match_ids` (-1: no model token).
        donor_ids: the ids at which the donor has a token.
        model_ids: the ids at which the model has a token.
        model_rows: the model's embedding rows.

    Returns:
        The :class:`RowPlan`.
    """
    index = matched.clone()
    rows = index.shape[0]
    has_donor = torch.zeros(rows, dtype=torch.bool)
    has_donor[torch.tensor([i for i in donor_ids if 0 <= i < rows], dtype=torch.int64)] = True
    has_model = torch.zeros(max(rows, model_rows), dtype=torch.bool)
    has_model[torch.tensor([i for i in model_ids if 0 <= i < model_rows], dtype=torch.int64)] = True
    ids = torch.arange(rows)
    keep_pad = ~has_donor & (ids < model_rows) & ~has_model[:rows]
    index[keep_pad] = ids[keep_pad]
    new = (has_donor & (matched < 0)).nonzero().squeeze(1)
    anchors = (has_donor & (matched >= 0)).nonzero().squeeze(1)
    return RowPlan(index=index, new=new, anchors=anchors)


def build_matrix(
    plan: RowPlan,
    model_rows: torch.Tensor,
    method: str,
    donor_rows: torch.Tensor | None = None,
    k: int = 64,
    batch: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The output matrix: copied rows bit for bit, new rows initialised by ``method``, other rows zero.

    Args:
        plan: from :func:`plan_rows`.
        model_rows: ``(V, H)`` the model's embedding (or head) matrix.
        method: ``omp``, ``mean`` or ``zero``.
        donor_rows: ``(Vd, Dd)`` the donor's matrix (its rows in donor ids); needed for ``omp``. New
            tokens at ids beyond it get the ``mean`` row.
        k: anchors per new token for ``omp``.
        batch: new tokens per OMP call.
        on_batch: progress callback (rows done).

    Returns:
        ``(R, H)`` in ``model_rows``' dtype.

    Raises:
        ValueError: ``omp`` without ``donor_rows``, or with no shared token to build from.
    """
    rows, width = plan.index.shape[0], model_rows.shape[1]
    out = torch.zeros(rows, width, dtype=model_rows.dtype)
    have = plan.index >= 0
    out[have] = model_rows[plan.index[have]]  # exact copies, in the model's dtype
    new = plan.new
    if new.numel() == 0:
        return out
    if method != "omp":
        out[new] = baseline_rows(method, model_rows, new.numel()).to(model_rows.dtype)
        return out
    if donor_rows is None or plan.anchors.numel() == 0:
        raise ValueError("omp needs the donor's matrix and at least one shared token")
    within = new < donor_rows.shape[0]
    anchors = plan.anchors[plan.anchors < donor_rows.shape[0]]
    targets = new[within]
    fresh = omp_rows(
        donor_rows[targets].float(),  # (N, Dd)
        donor_rows[anchors].float(),  # (A, Dd)
        model_rows[plan.index[anchors]].float(),  # (A, H)
        k,
        batch,
        on_batch,
    )
    out[targets] = fresh.to(model_rows.dtype)
    beyond = new[~within]
    if beyond.numel():
        out[beyond] = baseline_rows("mean", model_rows, beyond.numel()).to(model_rows.dtype)
    return out
