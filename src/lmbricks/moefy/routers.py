"""Routers of a MoEfied FFN: score experts from the FFN input, choose top-K or a dynamic K.

Every router is a :class:`MoefiedRouter`, in the vocabulary of :class:`lmbricks.moe.routers.Router`:
``num_experts``, ``hidden_size``, ``top_k``, ``logits(x)`` (T, E) and ``forward(x, mask) ->
RouterOutput``, whose slots come from a selection rule (:mod:`lmbricks.moefy.selection`): the
top ``top_k`` scores, or with ``dynamic_threshold`` the fewest experts whose predicted mass share
(the softmax of the scores) reaches it. Selected experts are summed with weight 1: the weights are
1, with the gradient of ``sigmoid(score)`` when the router learns (healing's straight-through gate).

* :class:`CentroidRouter` (no training, MoEfication's similarity router): expert e's score is
  ``x . c_e`` with ``c_e`` the mean of the expert's L2-normalised gate rows.
* :class:`LinearRouter`: ``x W^T + b`` fitted in closed form (:func:`fit_linear_router`) by ridge
  regression of the log expert output norms on the FFN input: one (H + 1)-sized solve per layer,
  so its softmax is also a predicted share of the output norm.
* :class:`MLPRouter`: ``Linear(H, h) -> tanh -> Linear(h, E)`` per layer (MoEfication's router
  shape; the hidden width is ours). Two training objectives (:func:`train_mlp_router`): ``soft``
  (default), cross-entropy between ``softmax(scores)`` and each token's distribution of expert
  output norms, so the scores rank *all* experts and their softmax is a predicted share (used by
  dynamic K); ``bce``, the reference code's binary cross-entropy against the top experts.
* The oracle is not a module: the experts whose true outputs are largest
  (:func:`expert_output_norms`), used for evaluation and as the MLP router's training target.

Each kind is registered by name (:func:`register_moefy_router`, :data:`MOEFY_ROUTERS`): that is the
list ``MoefyConfig.router`` accepts, with how the conversion fits the router (``fit``) and how a saved
directory rebuilds it (``from_state``).

They are not subclasses of the ``moe`` package's ``Router``: that class is a bias-free linear gate
(E, H) built in its constructor, which the MLP and linear routers are not; their parameter names
(``centroids``, ``proj.*``, ``inp.*`` / ``out.*``) are the keys of saved MoEfied directories.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.moefy.router_base import MOEFY_ROUTERS, MoefiedRouter, RouterFit, register_moefy_router
from lmbricks.moefy.selection import dynamic_mask, topk_mask

__all__ = [
    "MOEFY_ROUTERS",
    "CentroidRouter",
    "LinearRouter",
    "MLPRouter",
    "MoefiedRouter",
    "RouterFit",
    "register_moefy_router",
    "dynamic_mask",
    "expert_mass",
    "expert_output_norms",
    "fit_linear_router",
    "topk_mask",
    "train_mlp_router",
]


@register_moefy_router("centroid", reference="https://arxiv.org/abs/2110.01786")
class CentroidRouter(MoefiedRouter):
    """Scores ``x @ centroids.T``.

    Args:
        centroids: (E, H) one vector per expert.
        top_k: experts per token.
        dynamic_threshold: see :class:`MoefiedRouter`.
    """

    needs_data = False

    def __init__(self, centroids: Tensor, top_k: int = 1, dynamic_threshold: float | None = None) -> None:
        super().__init__(centroids.shape[1], centroids.shape[0], top_k, dynamic_threshold)
        self.centroids = nn.Parameter(centroids.float().clone())

    @classmethod
    @override
    def fit(cls, data: RouterFit) -> CentroidRouter:
        return cls.from_rows(data.rows, data.config.experts)

    @classmethod
    @override
    def from_state(cls, state: dict[str, Tensor], hidden_size: int, num_experts: int) -> CentroidRouter:
        centroids = state["centroids"]
        if tuple(centroids.shape) != (num_experts, hidden_size):
            expected = (num_experts, hidden_size)
            raise CheckpointError(f"router tensor centroids is {tuple(centroids.shape)}, expected {expected}")
        return cls(centroids)

    @classmethod
    def from_rows(cls, rows: Tensor, num_experts: int) -> CentroidRouter:
        """Centroids of the L2-normalised routing rows (I, H), experts being consecutive blocks."""
        unit = F.normalize(rows.float(), dim=1)
        return cls(unit.view(num_experts, -1, unit.shape[1]).mean(1))

    @override
    def logits(self, x: Tensor) -> Tensor:
        """(N, H) -> (N, E) scores, computed in the input's dtype."""
        return (x @ self.centroids.T.to(x.dtype)).float()


@register_moefy_router("linear", reference="closed-form ridge regression (docs/emergent-bricks.md)")
class LinearRouter(MoefiedRouter):
    """``Linear(H, E)``: scores are predicted log output norms of the experts."""

    predicts_share = True

    def __init__(
        self, hidden_size: int, num_experts: int, top_k: int = 1, dynamic_threshold: float | None = None
    ) -> None:
        super().__init__(hidden_size, num_experts, top_k, dynamic_threshold)
        self.proj = nn.Linear(hidden_size, num_experts)

    @classmethod
    @override
    def fit(cls, data: RouterFit) -> LinearRouter:
        x, target = data.data("linear")
        return fit_linear_router(x.float(), target, data.config.router_ridge)

    @override
    def logits(self, x: Tensor) -> Tensor:
        """(N, H) -> (N, E) scores."""
        return self.proj(x).float()


def fit_linear_router(x: Tensor, target: Tensor, ridge: float = 0.1) -> LinearRouter:
    """Fit a :class:`LinearRouter` by ridge regression of ``log(target)`` on ``[x, 1]``.

    Args:
        x: (N, H) FFN inputs on the calibration corpus.
        target: (N, E) positive expert importances (output norms).
        ridge: penalty, relative to the mean diagonal of the Gram matrix (scale-free).

    Returns:
        The router (eval mode, fp32).
    """
    n, h = x.shape
    x1 = torch.cat([x.double(), torch.ones(n, 1, dtype=torch.float64)], dim=1)  # (N, H + 1)
    gram = x1.T @ x1
    gram += ridge * gram.diagonal().mean() * torch.eye(h + 1, dtype=torch.float64)
    y = target.double().clamp_min(1e-8).log()  # (N, E)
    coef = torch.linalg.solve(gram, x1.T @ y)  # (H + 1, E)
    router = LinearRouter(h, target.shape[1])
    with torch.no_grad():
        router.proj.weight.copy_(coef[:h].T.float())
        router.proj.bias.copy_(coef[h].float())
    return router.eval()


@register_moefy_router("mlp", reference="https://arxiv.org/abs/2110.01786")
class MLPRouter(MoefiedRouter):
    """``Linear(H, hidden) -> tanh -> Linear(hidden, E)``; outputs are logits of "expert is needed"."""

    predicts_share = True  # with the default soft objective

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        hidden: int = 256,
        top_k: int = 1,
        dynamic_threshold: float | None = None,
    ) -> None:
        super().__init__(hidden_size, num_experts, top_k, dynamic_threshold)
        self.inp = nn.Linear(hidden_size, hidden)
        self.out = nn.Linear(hidden, num_experts)

    @classmethod
    @override
    def fit(cls, data: RouterFit) -> MLPRouter:
        x, target = data.data("mlp")
        c = data.config
        return train_mlp_router(x.float(), target, c.label_k or c.top_k, c.router_hidden, c.router_steps,
                                c.router_lr, seed=data.seed, objective=c.router_objective)  # fmt: skip

    @classmethod
    @override
    def from_state(cls, state: dict[str, Tensor], hidden_size: int, num_experts: int) -> MLPRouter:
        router = cls(hidden_size, num_experts, state["inp.weight"].shape[0])
        router.load_state_dict(state)
        return router

    @override
    def logits(self, x: Tensor) -> Tensor:
        """(N, H) -> (N, E) logits."""
        return self.out(torch.tanh(self.inp(x))).float()


def expert_mass(a: Tensor, down_norms: Tensor, num_experts: int) -> Tensor:
    """Per-token activation mass of each expert, ``sum_{i in e} |a_i| * ||W_down[:, i]||``.

    Args:
        a: (N, I) intermediate activations in expert order (consecutive blocks of I / E).
        down_norms: (I,) column norms of the (permuted) down projection.
        num_experts: E.

    Returns:
        (N, E) fp32.
    """
    m = a.float().abs() * down_norms.to(a.device, torch.float32)
    return m.view(*m.shape[:-1], num_experts, -1).sum(-1)


def expert_output_norms(a: Tensor, w_down: Tensor) -> Tensor:
    """Per-token norm of each expert's output ``||sum_{i in e} a_i W_down[:, i]||``.

    This is what dropping an expert removes from the FFN output, so the oracle keeps the experts
    with the largest values; :func:`expert_mass` is its upper bound by the triangle inequality
    (equal only when the neurons' output vectors align).

    Args:
        a: (N, I) intermediate activations in expert order.
        w_down: (E, n, H) each expert's down columns, transposed.

    Returns:
        (N, E) fp32.
    """
    e, n, _ = w_down.shape
    parts = torch.bmm(a.float().reshape(-1, e, n).transpose(0, 1), w_down.float())  # (E, N, H)
    return parts.norm(dim=-1).T.contiguous()


def train_mlp_router(
    x: Tensor,
    target: Tensor,
    label_k: int,
    hidden: int = 256,
    steps: int = 400,
    lr: float = 3e-3,
    batch_size: int = 1024,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    objective: str = "soft",
) -> MLPRouter:
    """Fit an :class:`MLPRouter` so its top scores are the experts the oracle would keep.

    Args:
        x: (N, H) FFN inputs on the calibration corpus.
        target: (N, E) each expert's true importance for those inputs (output norms or mass).
        label_k: for ``bce``, the ``label_k`` most important experts of each token are positives.
        hidden: router hidden width.
        steps: Adam steps.
        lr: learning rate (cosine decay to 10%).
        batch_size: tokens per step.
        seed: initialisation and batch order.
        on_step: called with (step, loss) every 50 steps.
        objective: ``soft`` (cross-entropy to the normalised target distribution; ranks every
            expert, so one router serves any K) or ``bce`` (top-``label_k`` labels).

    Returns:
        The trained router (eval mode, fp32).
    """
    if objective not in ("soft", "bce"):
        raise ConfigError(f"router objective must be 'soft' or 'bce', got {objective!r}")
    torch.manual_seed(seed)
    n, h = x.shape
    router = MLPRouter(h, target.shape[1], hidden)
    labels = _router_labels(target, objective, label_k)  # (N, E)
    # inputs are RMS-normalised hidden states of a few large dimensions: standardise for Adam, fold back
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    opt = torch.optim.Adam(router.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / max(steps, 1))))
    gen = torch.Generator().manual_seed(seed)
    xs = (x.float() - mu) / sd
    with torch.enable_grad():
        for step in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
            logits = router.logits(xs[idx])
            if objective == "bce":
                loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
            else:
                loss = -(labels[idx] * F.log_softmax(logits, dim=-1)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_step is not None and step % 50 == 0:
                on_step(step, float(loss.detach()))
    _fold_standardisation(router.inp, mu, sd)
    return router.eval()


def _router_labels(target: Tensor, objective: str, label_k: int) -> Tensor:
    """(N, E) training targets: top-``label_k`` indicators (bce) or the normalised importances (soft)."""
    if objective == "bce":
        return topk_mask(target, label_k).float()
    return target.float() / target.float().sum(-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def _fold_standardisation(layer: nn.Linear, mu: Tensor, sd: Tensor) -> None:
    """Make ``layer((x - mu) / sd) == layer'(x)`` in place, so the router reads raw inputs."""
    w = layer.weight / sd[None, :]
    layer.bias.sub_(w @ mu)
    layer.weight.copy_(w)
