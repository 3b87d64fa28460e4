"""Routers of a MoEfied FFN: score experts from the FFN input, choose top-K or a dynamic K.

* :class:`CentroidRouter` (no training, MoEfication's similarity router): expert e's score is
  ``x . c_e`` with ``c_e`` the mean of the expert's L2-normalised gate rows.
* :class:`MLPRouter`: ``Linear(H, h) -> tanh -> Linear(h, E)`` per layer, trained with binary
  cross-entropy against the experts that hold the most activation mass (the reference code's
  objective; the hidden width is ours, 256 by default).
* The oracle is not a module: :func:`expert_mass` of the true activations, used for evaluation.

Selected experts are summed with weight 1; the scores only choose them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbricks.errors import ConfigError


class CentroidRouter(nn.Module):
    """Scores ``x @ centroids.T``.

    Args:
        centroids: (E, H) one vector per expert.
    """

    def __init__(self, centroids: Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.float().clone())

    @classmethod
    def from_rows(cls, rows: Tensor, n_experts: int) -> CentroidRouter:
        """Centroids of the L2-normalised routing rows (I, H), experts being consecutive blocks."""
        unit = F.normalize(rows.float(), dim=1)
        return cls(unit.view(n_experts, -1, unit.shape[1]).mean(1))

    def forward(self, x: Tensor) -> Tensor:
        """(N, H) -> (N, E) scores."""
        return x @ self.centroids.T.to(x.dtype)


class MLPRouter(nn.Module):
    """``Linear(H, hidden) -> tanh -> Linear(hidden, E)``; outputs are logits of "expert is needed"."""

    def __init__(self, hidden_size: int, n_experts: int, hidden: int = 256) -> None:
        super().__init__()
        self.inp = nn.Linear(hidden_size, hidden)
        self.out = nn.Linear(hidden, n_experts)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H) -> (N, E) logits."""
        return self.out(torch.tanh(self.inp(x)))


def expert_mass(a: Tensor, down_norms: Tensor, n_experts: int) -> Tensor:
    """Per-token activation mass of each expert, ``sum_{i in e} |a_i| * ||W_down[:, i]||``.

    Args:
        a: (N, I) intermediate activations in expert order (consecutive blocks of I / E).
        down_norms: (I,) column norms of the (permuted) down projection.
        n_experts: E.

    Returns:
        (N, E) fp32.
    """
    m = a.float().abs() * down_norms.to(a.device, torch.float32)
    return m.view(*m.shape[:-1], n_experts, -1).sum(-1)


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """(N, E) bool mask of the ``k`` highest scores per token."""
    if not 1 <= k <= scores.shape[-1]:
        raise ConfigError(f"top_k must be in [1, {scores.shape[-1]}], got {k}")
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter_(-1, idx, True)


def dynamic_mask(probs: Tensor, threshold: float, min_k: int = 1) -> Tensor:
    """Per token, the fewest experts whose share of the predicted mass reaches ``threshold``.

    Args:
        probs: (N, E) non-negative predicted mass (e.g. sigmoid of the MLP router's logits).
        threshold: share in (0, 1].
        min_k: at least this many experts.

    Returns:
        (N, E) bool mask.
    """
    share = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
    sorted_share, order = share.sort(-1, descending=True)
    before = sorted_share.cumsum(-1) - sorted_share  # mass of the experts ranked above
    keep_sorted = before < threshold
    keep_sorted[..., :min_k] = True
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)


def train_mlp_router(
    x: Tensor,
    mass: Tensor,
    label_k: int,
    hidden: int = 256,
    steps: int = 400,
    lr: float = 3e-3,
    batch_size: int = 1024,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> MLPRouter:
    """Fit an :class:`MLPRouter` so its top scores are the experts with the most mass.

    Args:
        x: (N, H) FFN inputs on the calibration corpus.
        mass: (N, E) the experts' true activation mass for those inputs.
        label_k: the ``label_k`` heaviest experts of each token are the positives.
        hidden: router hidden width.
        steps: Adam steps.
        lr: learning rate (cosine decay to 10%).
        batch_size: tokens per step.
        seed: initialisation and batch order.
        on_step: called with (step, loss) every 50 steps.

    Returns:
        The trained router (eval mode, fp32).
    """
    torch.manual_seed(seed)
    n, h = x.shape
    router = MLPRouter(h, mass.shape[1], hidden)
    labels = topk_mask(mass, label_k).float()
    # inputs are RMS-normalised hidden states of a few large dimensions: standardise for Adam, fold back
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    opt = torch.optim.Adam(router.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(s / max(steps, 1) * torch.pi)).item())
    )
    gen = torch.Generator().manual_seed(seed)
    xs = (x.float() - mu) / sd
    with torch.enable_grad():
        for step in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
            loss = F.binary_cross_entropy_with_logits(router(xs[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_step is not None and step % 50 == 0:
                on_step(step, float(loss))
    with torch.no_grad():  # fold the standardisation into the first layer: router(x) on raw inputs
        w = router.inp.weight / sd[None, :]
        router.inp.bias.sub_(w @ mu)
        router.inp.weight.copy_(w)
    return router.eval()
