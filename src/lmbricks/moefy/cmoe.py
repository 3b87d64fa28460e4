"""CMoE-style carving of a gated FFN (after arXiv 2502.04416): shared experts, balanced routed experts,
and a router read off the gate and up weights, all without training.

On calibration activations ``a`` (T, I) (the down projection's input), each token marks its
``k`` neurons of largest ``|a|`` (:func:`activation_markers`); a neuron's *activation rate* is the
fraction of tokens that mark it. The ``S * n`` neurons of highest rate form the S shared experts
(always on; n = I / E neurons per expert). The others are clustered into ``E - S`` routed experts of
exactly n by the balanced spherical k-means of :mod:`lmbricks.moefy.cluster` on their marker
columns (neurons marked by the same tokens share an expert). Each routed expert's *representative*
is its member closest to the cluster's centroid, and the router scores expert e on input x by that
neuron's own activation magnitude, ``|act(x . W_gate[r_e]) * (x . W_up[r_e])|`` (:class:`CMoERouter`):
an analytic router, two rows of the FFN's weights per expert.

:func:`cmoe_mask` turns a carving and a router into the (T, I) mask of the neurons a token uses
(shared experts plus its top-K routed experts); :func:`cmoe_applied` applies it to lmbricks' dense
FFNs by zeroing the other neurons at the down projection's input, which computes what the carved
MoE computes (a measurement of quality, not a sparse runtime; ``lmbricks sparsify evaluate
--method cmoe`` uses it). :func:`carve_model` carves every FFN of lmbricks' LM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.moefy.cluster import balanced_kmeans
from lmbricks.nn.ffn import GatedFFN, gate_activation


def check_shape(width: int, experts: int, shared: int) -> None:
    """Refuse E not dividing the FFN width I, or S outside [0, E) (ConfigError naming the field)."""
    if experts < 1 or width % experts:
        raise ConfigError(f"experts: {experts} does not divide the FFN width {width}")
    if not 0 <= shared < experts:
        raise ConfigError(f"shared: between 0 and {experts - 1} shared experts, got {shared}")


def activation_markers(a: Tensor, k: int) -> Tensor:
    """(T, I) bool: each token's ``k`` neurons of largest ``|a|``.

    Raises:
        ConfigError: k outside [1, I].
    """
    width = a.shape[-1]
    if not 1 <= k <= width:
        raise ConfigError(f"k: each token marks between 1 and {width} neurons, got {k}")
    flat = a.detach().float().reshape(-1, width).abs()
    top = flat.topk(k, dim=1).indices  # (T, k)
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)


@dataclass
class Carving:
    """One FFN carved into experts.

    Attributes:
        shared: (S * n,) the shared experts' neurons, sorted (always on).
        experts: (E - S, n) each routed expert's neurons, rows sorted.
        representatives: (E - S,) the neuron that scores each routed expert.
        rates: (I,) activation rate of every neuron on the calibration tokens.
    """

    shared: Tensor
    experts: Tensor
    representatives: Tensor
    rates: Tensor


def carve(markers: Tensor, experts: int, shared: int, seed: int = 0) -> Carving:
    """CMoE's carving of one FFN from its calibration activation markers.

    Args:
        markers: (T, I) bool, from :func:`activation_markers` on the calibration activations.
        experts: E, experts in all (shared included); must divide I.
        shared: S, shared experts, 0 <= S < E.
        seed: k-means initialisation.

    Returns:
        A :class:`Carving`.

    Raises:
        ConfigError: E not dividing I, S outside [0, E).
    """
    check_shape(markers.shape[-1], experts, shared)
    width = markers.shape[-1]
    rates = markers.float().mean(dim=0)  # (I,)
    n = width // experts
    order = torch.argsort(rates, descending=True, stable=True)
    shared_idx, rest = order[: shared * n].sort().values, order[shared * n :].sort().values  # (S n,), (R,)
    features = markers[:, rest].T.float()  # (R, T): where each routed neuron is marked
    routed = experts - shared
    labels = balanced_kmeans(features, routed, seed=seed)  # (R,)
    unit = torch.nn.functional.normalize(features, dim=1)
    members, reps = [], []
    for e in range(routed):
        idx = (labels == e).nonzero().squeeze(1)  # positions in rest
        centroid = unit[idx].mean(dim=0)
        reps.append(rest[idx[torch.argmax(unit[idx] @ centroid)]])
        members.append(rest[idx])
    return Carving(shared_idx, torch.stack(members), torch.stack(reps), rates)


class CMoERouter:
    """The analytic router: expert e scores ``|act(x . W_gate[r_e]) * (x . W_up[r_e])|``.

    Args:
        w_gate: (I, H) gate rows of the FFN.
        w_up: (I, H) up rows.
        representatives: (E - S,) from :func:`carve`.
        act: the FFN's gate activation (silu for SwiGLU).
    """

    def __init__(self, w_gate: Tensor, w_up: Tensor, representatives: Tensor, act: Callable[[Tensor], Tensor]) -> None:
        self.w_gate = w_gate.detach()[representatives]  # (E - S, H)
        self.w_up = w_up.detach()[representatives]
        self.act = act

    def scores(self, x: Tensor) -> Tensor:
        """(T, H) -> (T, E - S) routing scores."""
        return (self.act(x @ self.w_gate.T) * (x @ self.w_up.T)).abs()


def cmoe_mask(carving: Carving, scores: Tensor, top_k: int) -> Tensor:
    """(T, I) bool: the shared neurons and those of each token's ``top_k`` best-scored routed experts.

    Args:
        carving: from :func:`carve`.
        scores: (T, E - S) router scores.
        top_k: routed experts per token, 0 <= top_k <= E - S.
    """
    routed, n = carving.experts.shape
    if not 0 <= top_k <= routed:
        raise ConfigError(f"top_k: between 0 and {routed} routed experts, got {top_k}")
    width = carving.rates.numel()
    mask = torch.zeros(scores.shape[0], width, dtype=torch.bool)
    mask[:, carving.shared] = True
    if top_k:
        chosen = scores.topk(top_k, dim=1).indices  # (T, K)
        neurons = carving.experts[chosen].reshape(scores.shape[0], top_k * n)  # (T, K n)
        mask.scatter_(1, neurons, True)
    return mask


@dataclass
class CMoELayer:
    """One carved FFN and its router (analytic, or ``moefy``'s fitted linear one)."""

    carving: Carving
    router: CMoERouter | FittedRouter


def _dense_ffns(model: nn.Module) -> list[GatedFFN]:
    ffns = [m for m in model.modules() if isinstance(m, GatedFFN)]
    if not ffns:
        raise ConfigError("CMoE carving needs lmbricks' LM with dense GatedFFN layers (load with lmbricks.load_model)")
    return ffns


def _router(ffn: GatedFFN, reps: Tensor) -> CMoERouter:
    half = ffn.gate_up.out_features // 2
    w = ffn.gate_up.weight.detach()
    return CMoERouter(w[:half], w[half:], reps, lambda g: gate_activation(g, ffn.activation, ffn.threshold))


class FittedRouter:
    """``moefy``'s ridge-fitted linear router on a carving's routed experts (the alternative to the analytic one)."""

    def __init__(self, x: Tensor, mass: Tensor) -> None:
        from lmbricks.moefy.routers import fit_linear_router

        self.linear = fit_linear_router(x.float(), mass)

    def scores(self, x: Tensor) -> Tensor:
        """(T, H) -> (T, E - S) predicted log expert masses."""
        return self.linear.logits(x.float())


@torch.no_grad()
def carve_model(
    model: nn.Module, blocks: Tensor, experts: int, shared: int, k: int, seed: int = 0, router: str = "analytic"
) -> list[CMoELayer]:
    """Carve every dense FFN of ``model`` from the dense activations on calibration ``blocks`` (B, T).

    Args:
        model: lmbricks' LM.
        blocks: calibration token ids, run one row at a time.
        experts: E per FFN; shared: S of them; k: neurons marked per token.
        seed: k-means initialisation.
        router: "analytic" (:class:`CMoERouter`) or "linear" (:class:`FittedRouter`, fitted on the
            calibration FFN inputs against each routed expert's output mass ``sum |a_i| ||W_down[:, i]||``).

    Returns:
        One :class:`CMoELayer` per FFN, in layer order.
    """
    if router not in ("analytic", "linear"):
        raise ConfigError(f"router: 'analytic' or 'linear', got {router!r}")
    ffns = _dense_ffns(model)
    check_shape(ffns[0].down.in_features, experts, shared)
    marks, seen = _collect(model, ffns, blocks, k, with_inputs=router == "linear")
    out = []
    for i, (ffn, m) in enumerate(zip(ffns, marks, strict=True)):
        c = carve(torch.cat(m), experts, shared, seed)
        if router == "analytic":
            out.append(CMoELayer(c, _router(ffn, c.representatives)))
            continue
        x = torch.cat([p[0] for p in seen[i]]).float()
        a = torch.cat([p[1] for p in seen[i]]).float().abs() * ffn.down.weight.detach().float().norm(dim=0)
        out.append(CMoELayer(c, FittedRouter(x, a[:, c.experts].sum(-1))))
        seen[i] = []
    return out


def _collect(
    model: nn.Module, ffns: list[GatedFFN], blocks: Tensor, k: int, with_inputs: bool
) -> tuple[list[list[Tensor]], list[list[tuple[Tensor, Tensor]]]]:
    """Per FFN, the activation markers of every calibration forward, and (with_inputs) its (x, a) in bf16."""
    marks: list[list[Tensor]] = [[] for _ in ffns]
    seen: list[list[tuple[Tensor, Tensor]]] = [[] for _ in ffns]

    def keeper(i: int) -> Any:
        def hook(_mod: nn.Module, args: tuple[Tensor, ...]) -> None:
            marks[i].append(activation_markers(args[0], k))

        return hook

    def inputs(i: int) -> Any:
        def hook(_mod: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])  # (T, H)
            seen[i].append((x.bfloat16(), _intermediate(ffns[i], x).bfloat16()))

        return hook

    handles = [f.down.register_forward_pre_hook(keeper(i)) for i, f in enumerate(ffns)]
    if with_inputs:
        handles += [f.register_forward_pre_hook(inputs(i)) for i, f in enumerate(ffns)]
    try:
        for row in blocks:
            model(row[None])
    finally:
        for h in handles:
            h.remove()
    return marks, seen


def _intermediate(ffn: GatedFFN, x: Tensor) -> Tensor:
    half = ffn.gate_up.out_features // 2
    g, u = x @ ffn.gate_up.weight[:half].t(), x @ ffn.gate_up.weight[half:].t()
    return gate_activation(g, ffn.activation, ffn.threshold) * u  # (T, I)


@contextmanager
def cmoe_applied(model: nn.Module, layers: list[CMoELayer], top_k: int, oracle: bool = False) -> Iterator[None]:
    """Inside the block every dense FFN keeps only its shared and its top-``top_k`` routed experts per token.

    With ``oracle`` the routed experts are chosen by their true mass ``sum |a_i|`` over their
    neurons instead of the analytic router (an evaluation bound on the carving, never faster).

    Raises:
        ConfigError: ``layers`` does not match the model's FFNs, or a bad ``top_k``.
    """
    ffns = _dense_ffns(model)
    if len(ffns) != len(layers):
        raise ConfigError(f"layers: {len(ffns)} carved FFNs expected, got {len(layers)}")
    inputs: list[Tensor | None] = [None] * len(ffns)
    handles = []
    for i, (ffn, layer) in enumerate(zip(ffns, layers, strict=True)):

        def keep_input(_mod: nn.Module, args: tuple[Tensor, ...], i: int = i) -> None:
            inputs[i] = args[0]

        def mask(_mod: nn.Module, args: tuple[Tensor, ...], i: int = i, layer: CMoELayer = layer) -> tuple[Tensor]:
            x = inputs[i]
            assert x is not None
            if oracle:
                a = args[0].detach().float().reshape(-1, args[0].shape[-1]).abs()  # (T, I)
                scores = a[:, layer.carving.experts].sum(-1)  # (T, E - S): each routed expert's true mass
            else:
                scores = layer.router.scores(x.reshape(-1, x.shape[-1]))  # (T, E - S)
            m = cmoe_mask(layer.carving, scores, top_k).to(args[0].dtype)  # (T, I)
            return (args[0] * m.reshape(args[0].shape),)

        handles += [ffn.register_forward_pre_hook(keep_input), ffn.down.register_forward_pre_hook(mask)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
