"""Router initialisation as pure tensor functions: rows of the gate matrix from hidden-state statistics.

A router of E experts at one layer is a matrix (E, H); the logit of expert e for a token x is
``x . row_e``. Every function here returns rows for all MoE layers at once, shape (L, E, H), L the
number of MoE layers. The statistics they take are computed by :mod:`lmbricks.grow.hidden`.

- ``hidden`` (mergekit-moe): per expert, the mean over its positive prompts of the last token's
  router input, minus the same over its negative prompts, normalised to unit length.
- ``cheap_embed`` (mergekit-moe): the summed token embeddings of the prompts, same row every layer.
- ``domain`` (lmbricks): the mean router input over the expert's domain corpus; with ``center`` the
  mean over all experts' domains is subtracted first (the shared component every domain has would
  otherwise make the rows nearly collinear), then normalised.
- ``random``: standard normal rows, normalised; ``uniform_random``: nn.Linear's default
  U(-1/sqrt(H), 1/sqrt(H)) (mergekit's two random modes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_EPS = 1e-8


def normalise_rows(v: Tensor) -> Tensor:
    """Unit L2 norm along the last axis (zero vectors stay zero)."""
    v = v.float()
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def prompt_rows(positive: Sequence[Tensor], negative: Sequence[Tensor | None]) -> Tensor:
    """Rows from per-expert prompt statistics (mergekit's ``hidden`` / ``cheap_embed``).

    Args:
        positive: per expert, (L, H) mean statistic of its positive prompts.
        negative: per expert, (L, H) of its negative prompts, or None.

    Returns:
        (L, E, H) unit rows: normalise(pos_e - neg_e).
    """
    rows = [p.float() - (n.float() if n is not None else 0.0) for p, n in zip(positive, negative, strict=True)]
    return normalise_rows(torch.stack(rows, dim=1))  # (L, E, H)


def domain_rows(means: Tensor, center: bool = True) -> Tensor:
    """Rows from per-expert domain means.

    Args:
        means: (E, L, H) mean router input of each expert's domain, per MoE layer.
        center: subtract the mean over experts (only with two or more distinct domains).

    Returns:
        (L, E, H) unit rows.
    """
    m = means.float()
    if center and m.shape[0] > 1:
        m = m - m.mean(dim=0, keepdim=True)
    return normalise_rows(m.transpose(0, 1))  # (L, E, H)


def random_rows(num_layers: int, num_experts: int, hidden: int, generator: torch.Generator, mode: str) -> Tensor:
    """Random rows (L, E, H): ``random`` = normalised N(0, 1); ``uniform_random`` = U(-1/sqrt(H), 1/sqrt(H))."""
    shape = (num_layers, num_experts, hidden)
    if mode == "uniform_random":
        bound = 1.0 / hidden**0.5
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return normalise_rows(torch.randn(shape, generator=generator))


def row_cosines(rows: Tensor) -> Tensor:
    """Pairwise cosine similarity of the rows of each layer: (L, E, H) -> (L, E, E)."""
    u = normalise_rows(rows)
    return u @ u.transpose(1, 2)


@dataclass(frozen=True)
class Collinearity:
    """The most similar pair of router rows in one layer."""

    layer: int  # model layer index
    experts: tuple[int, int]
    cosine: float


def collinear_pairs(rows: Tensor, layers: Sequence[int], threshold: float = 0.9) -> list[Collinearity]:
    """Layers whose two most similar router rows have cosine above ``threshold``.

    Two nearly collinear rows give their experts almost the same logit for every token, so the router
    can hardly tell them apart (mergekit warns on the condition number for the same reason).

    Args:
        rows: (L, E, H) router rows.
        layers: the model layer index of each of the L rows.
        threshold: cosine above which a pair is reported.

    Returns:
        One :class:`Collinearity` per offending layer, in layer order.
    """
    out: list[Collinearity] = []
    if rows.shape[1] < 2:
        return out
    cos = row_cosines(rows)  # (L, E, E)
    e = rows.shape[1]
    off = cos.masked_fill(torch.eye(e, dtype=torch.bool), -2.0)
    for li, layer in enumerate(layers):
        flat = int(off[li].argmax())
        a, b = divmod(flat, e)
        value = float(off[li, a, b])
        if value > threshold:
            out.append(Collinearity(layer=int(layer), experts=(min(a, b), max(a, b)), cosine=value))
    return out


def describe_collinearity(found: Sequence[Collinearity], labels: Sequence[str], num_layers: int) -> str:
    """One warning line: which layers, which experts, how similar."""
    worst = max(found, key=lambda c: c.cosine)
    where = "every MoE layer" if len(found) >= num_layers else f"layers {', '.join(str(c.layer) for c in found[:8])}"
    if len(found) > 8 and len(found) < num_layers:
        where += f" and {len(found) - 8} more"
    a, b = worst.experts
    return (
        f"router rows are nearly collinear in {where} (worst: layer {worst.layer}, experts {a} "
        f"{labels[a]!r} and {b} {labels[b]!r}, cosine {worst.cosine:.3f}): the router will hardly tell "
        "those experts apart; use more distinct prompts or domains"
    )


def scale_to(rows: Tensor, reference: Tensor) -> Tensor:
    """Rescale unit ``rows`` (L, n, H) to the mean row norm of ``reference`` (L, E, H), layer by layer.

    Used when a new expert joins a trained router whose rows are no longer unit vectors.
    """
    norms = reference.float().norm(dim=-1).mean(dim=-1)  # (L,)
    return normalise_rows(rows) * norms[:, None, None]
