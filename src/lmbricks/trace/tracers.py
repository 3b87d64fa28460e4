"""Tracers: read the routing decisions of one forward pass, one implementation per model family.

A :class:`Tracer` runs the model on a batch of B sequences (right-padded to T tokens) and returns a
:class:`LayerRouting` per routed layer, whose rows are the B x T tokens in row-major order. Right
padding leaves the real tokens' computation unchanged under causal attention, so a tracer is
``batchable`` unless padding can change routing (MoE capacity limits, where pads compete for slots).

Tracers are registered with :func:`register_tracer` (in priority order) and picked for a model by
:func:`find_tracer`, which asks each one whether it ``matches`` the model.

Built in:
- ``lmbricks-aux``: :class:`lmbricks.nn.LM` with :class:`lmbricks.moe.MoELayer` FFNs. Reads the
  ``MoEAux`` the model returns (indices after capacity drops, -1 where dropped).
- ``moefied``: MoEfied models (:mod:`lmbricks.moefy`): the router hooks on the router of every
  :class:`lmbricks.moefy.MoefiedFFN`, reading the ``RouterOutput`` it returns (top-K, or dynamic K
  with its unrouted slots -1). MoEfied experts are summed with weight 1; the trace keeps
  sigmoid(router score) as the weight so that the first choice is the best-scored expert. Shared
  experts (always on) are listed after the routed slots with weight 0, numbered as in the model.
- ``router-hooks``: forward hooks on every sub-module whose class name ends in ``Router`` and whose
  output is either a Hugging Face router tuple ``(logits (T, E), scores (T, k), indices (T, k))``
  (transformers 5 Mixtral, Qwen2-MoE, OLMoE, ...) or an object with ``indices``/``weights``/``logits``
  tensors (``lmbricks.moe.RouterOutput``). This is the duck-typed entry for MoEfied models and
  adapter routing: a router module named ``...Router`` that returns a RouterOutput is traced with
  no further code. A router that decides once per sequence (indices (B, k)) is broadcast to its tokens.
- :class:`AdapterRouterTracer` (passed explicitly): adapter routing (:mod:`lmbricks.adapters.route`)
  chooses bricks once per input from the base model's mean hidden state; the trace has one
  "layer" (the router's hidden layer) whose k choices are the same for every token of a document.
- ``hf-router-logits``: the fallback for Hugging Face MoE models whose routers are not modules of
  their own: ``output_router_logits=True``, then softmax and top-k (``num_experts_per_tok``) per layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from typing_extensions import override

from lmbricks.errors import ConfigError
from lmbricks.moefy.runtime import MoefiedFFN
from lmbricks.trace.types import LayerRouting


@runtime_checkable
class Tracer(Protocol):
    """Runs ``model`` on ``input_ids`` (B, T); returns the routing of every routed layer, in layer order.

    Each :class:`LayerRouting` has B x T rows (row-major). ``batchable`` is false when right padding
    could change the routing of real tokens; the caller then passes one sequence at a time.
    """

    name: str
    batchable: bool

    def __call__(self, model: Any, input_ids: Tensor) -> list[LayerRouting]: ...


@dataclass(frozen=True)
class TracerEntry:
    name: str
    matches: Callable[[Any], bool]
    build: Callable[[Any], Tracer]
    description: str


TRACERS: list[TracerEntry] = []


def register_tracer(
    name: str, matches: Callable[[Any], bool], build: Callable[[Any], Tracer], description: str = ""
) -> None:
    """Add a tracer; :func:`find_tracer` tries tracers in registration order (first match wins).

    Args:
        name: short name shown in reports.
        matches: ``matches(model)`` is true when the tracer can read this model's routing.
        build: ``build(model)`` returns the Tracer.
        description: one line for the docs.
    """
    TRACERS[:] = [t for t in TRACERS if t.name != name]
    TRACERS.append(TracerEntry(name, matches, build, description))


def find_tracer(model: Any) -> Tracer:
    """The first registered tracer that matches ``model`` (ConfigError naming the model class if none)."""
    for entry in TRACERS:
        if entry.matches(model):
            return entry.build(model)
    raise ConfigError(
        f"{type(model).__name__} has no routed layers that lmbricks can trace (tried: "
        f"{', '.join(t.name for t in TRACERS)}); expose router modules named '...Router' returning "
        "lmbricks.moe.RouterOutput, or call lmbricks.trace.register_tracer"
    )


def _layer_number(name: str, fallback: int) -> int:
    """The first integer component of a module path (``model.layers.3.mlp.gate`` -> 3)."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(match.group(1)) if match else fallback


# --------------------------------------------------------------------------- lmbricks.nn.LM
def _is_lmbricks_moe(model: Any) -> bool:
    layers = getattr(model, "layers", None)
    return (
        isinstance(layers, nn.ModuleList) and hasattr(model, "cfg") and any(getattr(b, "is_moe", False) for b in layers)
    )


class AuxTracer:
    """Reads ``output.aux`` (one MoEAux per MoE layer) of :class:`lmbricks.nn.LM`."""

    name = "lmbricks-aux"

    def __init__(self, model: Any) -> None:
        self.layers = [i for i, b in enumerate(model.layers) if getattr(b, "is_moe", False)]
        # with a capacity limit, padding tokens would compete with real ones for expert slots
        self.batchable = all(
            getattr(getattr(model.layers[i].ffn, "config", None), "capacity_factor", None) is None for i in self.layers
        )

    def __call__(self, model: Any, input_ids: Tensor) -> list[LayerRouting]:
        out = model(input_ids)
        if len(out.aux) != len(self.layers):
            raise ConfigError(f"model returned {len(out.aux)} MoE aux outputs for {len(self.layers)} MoE layers")
        routings = []
        for layer, aux in zip(self.layers, out.aux, strict=True):
            idx = aux.indices.reshape(-1, aux.indices.shape[-1])  # (T, k)
            w = aux.weights if aux.weights is not None else (idx >= 0).float()
            routings.append(
                LayerRouting(layer, idx.long(), w.reshape(idx.shape).float(), int(aux.router_logits.shape[-1]))
            )
        return routings


# --------------------------------------------------------------------------- router module hooks
def _router_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    mods = [(n, m) for n, m in model.named_modules() if n and type(m).__name__.endswith("Router")]
    # a router nested in another router (e.g. a wrapper) is read once, at the outermost level
    return [(n, m) for n, m in mods if not any(n.startswith(o + ".") for o, _ in mods if o != n)]


def _read_router_output(output: Any, batch: int, num_tokens: int) -> tuple[Tensor, Tensor, int]:
    """(indices (T, k), weights (T, k), E) from a router's output, HF tuple or RouterOutput-like."""
    if isinstance(output, tuple):
        ints = [t for t in output if isinstance(t, Tensor) and not t.is_floating_point()]
        floats = [t for t in output if isinstance(t, Tensor) and t.is_floating_point()]
        if len(ints) != 1:
            raise ConfigError(f"router output tuple has {len(ints)} integer tensors; expected one (indices)")
        idx = ints[0]
        same = [t for t in floats if t.shape == idx.shape]
        wider = [t for t in floats if t.shape[:-1] == idx.shape[:-1] and t.shape[-1] != idx.shape[-1]]
        if not wider:
            raise ConfigError("router output tuple has no (T, E) logits beside its (T, k) indices")
        logits = wider[0]
        w = same[0] if same else torch.softmax(logits.float(), -1).gather(-1, idx.long())
    elif hasattr(output, "indices") and hasattr(output, "logits"):
        idx, logits = output.indices, output.logits
        given: Tensor | None = getattr(output, "weights", None)
        w = torch.ones(idx.shape) if given is None else given
        mask = getattr(output, "mask", None)
        if mask is not None:  # expert choice / dense gating: slots that are not really routed
            idx = idx.masked_fill(~mask.bool(), -1)
            w = w * mask
    else:
        raise ConfigError(f"cannot read router output of type {type(output).__name__}")
    e = int(logits.shape[-1])
    idx = idx.reshape(-1, idx.shape[-1]).long().detach()
    w = w.reshape(idx.shape).float().detach()
    if idx.shape[0] == batch and num_tokens > 1:  # one decision per sequence (adapter routing)
        idx, w = idx.repeat_interleave(num_tokens, 0), w.repeat_interleave(num_tokens, 0)
    return idx, w, e


def _hooked_forward(
    model: Any, input_ids: Tensor, hooks: list[tuple[nn.Module, Callable[[nn.Module, Any, Any], None]]]
) -> None:
    """Run ``model(input_ids)`` with forward hooks on the given modules, removed afterwards."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    try:
        model(input_ids)
    finally:
        for h in handles:
            h.remove()


def _has_routers(model: Any) -> bool:
    return isinstance(model, nn.Module) and bool(_router_modules(model))


class RouterHookTracer:
    """Forward hooks on router modules; the model runs exactly as without them.

    Subclasses choose other modules (``self.routers``: (layer, module) pairs) or another reading of
    their outputs (:meth:`read`); the hooks, and the check that each router ran once, are shared.
    """

    name = "router-hooks"
    batchable = True

    def __init__(self, model: nn.Module) -> None:
        self.routers = [(_layer_number(n, i), m) for i, (n, m) in enumerate(_router_modules(model))]

    def read(self, output: Any, batch: int, num_tokens: int) -> tuple[Tensor, Tensor, int]:
        """(indices (T, k), weights (T, k), E) of one router call; see :func:`_read_router_output`."""
        return _read_router_output(output, batch, num_tokens)

    def __call__(self, model: Any, input_ids: Tensor) -> list[LayerRouting]:
        b, t = input_ids.shape
        seen: list[LayerRouting] = []

        def hook_for(layer: int) -> Callable[[nn.Module, Any, Any], None]:
            def hook(_m: nn.Module, _inp: Any, output: Any) -> None:
                idx, w, e = self.read(output, b, t)
                seen.append(LayerRouting(layer, idx, w, e))

            return hook

        _hooked_forward(model, input_ids, [(m, hook_for(layer)) for layer, m in self.routers])
        if len(seen) != len(self.routers):
            raise ConfigError(f"{len(seen)} router calls for {len(self.routers)} router modules in one forward pass")
        return sorted(seen, key=lambda r: r.layer)


# --------------------------------------------------------------------------- MoEfied FFNs
def _moefied_modules(model: Any) -> list[tuple[str, MoefiedFFN]]:
    if not isinstance(model, nn.Module):
        return []
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MoefiedFFN)]


def _has_moefied(model: Any) -> bool:
    return bool(_moefied_modules(model))


class MoefiedTracer(RouterHookTracer):
    """Hooks on the routers of MoEfied FFNs: reads the RouterOutput each layer's router produced.

    MoEfied experts are summed with weight 1, so the trace's weight of a pair is
    ``sigmoid(router score)`` instead: the first choice is the best-scored expert.

    Experts are numbered as the model numbers them. With S shared experts (``moefy
    --shared-experts S``: experts ``0 .. S-1``, always on) the router chooses among the other
    ``E - S``, so its choice j is the model's expert ``S + j``; the S shared experts follow the
    routed slots with weight 0 (no router chose them), so every expert that ran is in the trace and
    the first choice is still the best-scored routed one.
    """

    name = "moefied"

    def __init__(self, model: nn.Module) -> None:
        self.ffns = [(_layer_number(n, i), m) for i, (n, m) in enumerate(_moefied_modules(model))]
        self.routers = [(layer, m.router) for layer, m in self.ffns if m.router is not None]

    @override
    def read(self, output: Any, batch: int, num_tokens: int) -> tuple[Tensor, Tensor, int]:
        idx, _, e = _read_router_output(output, batch, num_tokens)  # (N, k), -1 where not routed
        score = output.logits.reshape(idx.shape[0], -1).detach().float().gather(1, idx.clamp_min(0))  # (N, k)
        return idx, torch.sigmoid(score).masked_fill(idx < 0, 0.0), e

    @override
    def __call__(self, model: Any, input_ids: Tensor) -> list[LayerRouting]:
        for layer, m in self.ffns:
            if m.mode != "router" or m.router is None:
                raise ConfigError(
                    f"MoEfied layer {layer} runs in mode {m.mode!r}, which has no router to trace; "
                    "switch with lmbricks.moefy.set_routing(model, mode='router')"
                )
        ffns = dict(self.ffns)
        return [_with_shared(r, ffns[r.layer]) for r in super().__call__(model, input_ids)]


def _with_shared(routing: LayerRouting, ffn: MoefiedFFN) -> LayerRouting:
    """The router's choices among the routed experts as the model's expert numbers, the shared ones after them."""
    s = ffn.shared_experts
    if not s:
        return LayerRouting(routing.layer, routing.indices, routing.weights, ffn.num_experts)
    idx = torch.where(routing.indices >= 0, routing.indices + s, -1)  # (N, k) routed choice j -> expert S + j
    shared = torch.arange(s, dtype=idx.dtype).expand(idx.shape[0], s)  # (N, S) always on
    weights = torch.cat([routing.weights, routing.weights.new_zeros(idx.shape[0], s)], dim=1)
    return LayerRouting(routing.layer, torch.cat([idx, shared], dim=1), weights, ffn.num_experts)


# --------------------------------------------------------------------------- adapter routing
class AdapterRouterTracer:
    """Adapter (brick) routing per input: ``router.route`` of the base model's mean hidden state.

    Args:
        router: an :class:`lmbricks.adapters.route.Router` (anything with ``names``, ``layer`` and
            ``route(h, top_k, temperature) -> [[(name, weight), ...]]``).
        top_k: bricks chosen per input.
        temperature: softmax temperature of the routing weights.
    """

    name = "adapter-router"
    batchable = False  # the routing input is a mean over the sequence: padding would shift it

    def __init__(self, router: Any, top_k: int = 1, temperature: float = 0.1) -> None:
        self.router, self.top_k, self.temperature = router, top_k, temperature
        self.position = {n: i for i, n in enumerate(router.names)}

    def __call__(self, model: Any, input_ids: Tensor) -> list[LayerRouting]:
        from lmbricks.adapters.route import mean_hidden

        b, t = input_ids.shape
        idx = torch.empty(b, self.top_k, dtype=torch.long)
        w = torch.empty(b, self.top_k)
        for j in range(b):
            h = mean_hidden(model, input_ids[j], self.router.layer)  # (H,)
            (choice,) = self.router.route(h[None], self.top_k, self.temperature)
            idx[j] = torch.tensor([self.position[n] for n, _ in choice])
            w[j] = torch.tensor([x for _, x in choice])
        layer = int(self.router.layer)
        return [LayerRouting(layer, idx.repeat_interleave(t, 0), w.repeat_interleave(t, 0), len(self.position))]


# --------------------------------------------------------------------------- HF output_router_logits
def _has_router_logits(model: Any) -> bool:
    cfg = getattr(model, "config", None)
    return cfg is not None and hasattr(cfg, "output_router_logits") and hasattr(cfg, "num_experts_per_tok")


class RouterLogitsTracer:
    """``output_router_logits=True``; softmax, top-k, renormalised unless ``norm_topk_prob`` is false."""

    name = "hf-router-logits"
    batchable = True

    def __init__(self, model: Any) -> None:
        self.top_k = int(model.config.num_experts_per_tok)
        # Mixtral always renormalises the top-k probabilities; Qwen2-MoE and OLMoE only with norm_topk_prob
        self.renormalise = bool(getattr(model.config, "norm_topk_prob", True))

    def __call__(self, model: Any, input_ids: Tensor) -> list[LayerRouting]:
        out = model(input_ids, output_router_logits=True)
        routings = []
        for layer, logits in enumerate(out.router_logits or ()):
            probs = torch.softmax(logits.reshape(-1, logits.shape[-1]).float(), -1)  # (T, E)
            w, idx = probs.topk(self.top_k, dim=-1)  # (T, k), sorted
            if self.renormalise:
                w = w / w.sum(-1, keepdim=True)
            routings.append(LayerRouting(layer, idx, w, int(probs.shape[-1])))
        return routings


register_tracer("lmbricks-aux", _is_lmbricks_moe, AuxTracer, "lmbricks.nn.LM with MoELayer FFNs (reads MoEAux)")
register_tracer("moefied", _has_moefied, MoefiedTracer, "MoEfied FFNs (lmbricks.moefy), router mode")
register_tracer(
    "router-hooks",
    _has_routers,
    RouterHookTracer,
    "forward hooks on '...Router' modules (transformers 5 MoE, lmbricks, MoEfied and adapter routers)",
)
register_tracer("hf-router-logits", _has_router_logits, RouterLogitsTracer, "Hugging Face output_router_logits=True")
