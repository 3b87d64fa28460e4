"""Model surgery: a sparse :class:`lmbricks.nn.LM` from dense weights, expert FFNs and router rows.

Everything here works in memory on state dicts in lmbricks' parameter names (``layers.{i}.ffn...``);
upcycling, assembly and growing differ only in where the experts and router rows come from.
The MoE layers are softmax top-k routers with renormalised gates (Mixtral; Qwen2-MoE with
``norm_topk_prob``), so a model of identical experts computes exactly the dense FFN.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import ConfigError
from lmbricks.grow.sources import ExpertFFN
from lmbricks.moe.layer import MoELayer
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM, Block, SwiGLU

_FFN_KEY = re.compile(r"^layers\.(\d+)\.ffn\.")


def moe_lm_config(
    dense: LMConfig,
    num_experts: int,
    top_k: int,
    every: int = 1,
    shared_expert: bool = False,
    intermediate_size: int | None = None,
    shared_width: int | None = None,
) -> LMConfig:
    """The config of a sparse model with the dense model's shape.

    Args:
        dense: the dense model's config.
        num_experts: E.
        top_k: experts per token.
        every: layer i is MoE iff (i + 1) % every == 0 (Qwen2-MoE's ``decoder_sparse_step``).
        shared_expert: add a Qwen2-MoE shared expert of the dense FFN's width.
        intermediate_size: width of each expert (default: the dense FFN's).
        shared_width: width of the shared expert (default: an expert's; several shared experts side by
            side are one wider shared expert).

    Returns:
        An LMConfig that ``save_model`` writes as Mixtral (no shared expert, every layer MoE, no q/k/v
        bias) or Qwen2-MoE (otherwise).

    Raises:
        ConfigError: naming the bad value (top_k > experts, every > layers, ...).
    """
    if dense.moe is not None:
        raise ConfigError("the model is already a mixture of experts (use grow to add experts)")
    if not isinstance(every, int) or every < 1:
        raise ConfigError(f"every must be a positive integer, got {every!r}")
    if every > dense.num_layers:
        raise ConfigError(f"every ({every}) exceeds the number of layers ({dense.num_layers}): no layer would be MoE")
    d = dense.to_dict()
    width = intermediate_size or dense.intermediate_size
    d.update(
        moe=dict(
            num_experts=num_experts,
            top_k=top_k,
            intermediate_size=width,
            router="softmax_topk",
            renormalize=True,
            shared_expert_intermediate_size=(shared_width or width) if shared_expert else 0,
        ),
        moe_every=every,
        dense_layers=[],
        family=None,
    )
    return LMConfig.from_dict(d)


def dense_ffn(state: Mapping[str, Tensor], layer: int) -> ExpertFFN:
    """The dense SwiGLU of ``layer`` from an LM state dict, fp32 copies in nn.Linear layout."""
    gate_up = state[f"layers.{layer}.ffn.gate_up.weight"].float()  # (2I, H): gate rows then up rows
    gate, up = gate_up.chunk(2)
    return ExpertFFN(gate.clone(), up.clone(), state[f"layers.{layer}.ffn.down.weight"].float().clone())


def layer_experts(layer: MoELayer) -> list[ExpertFFN]:
    """The experts of an MoE layer as fp32 nn.Linear-layout FFNs (copies)."""
    out = []
    for e in range(layer.experts.num_experts):
        w = layer.experts.expert_linear_weights(e)
        out.append(
            ExpertFFN(w["gate_proj"].float().clone(), w["up_proj"].float().clone(), w["down_proj"].float().clone())
        )
    return out


def moe_layers(model: LM) -> dict[int, MoELayer]:
    """``{layer index: MoELayer}`` of a sparse LM."""
    out = {}
    for i, block in enumerate(model.layers):
        assert isinstance(block, Block)
        if isinstance(block.ffn, MoELayer):
            out[i] = block.ffn
    return out


def _stack_experts(ffns: Sequence[ExpertFFN]) -> tuple[Tensor, Tensor]:
    """Experts in nn.Linear layout -> lmbricks' (E, H, 2I) [gate | up] and (E, I, H), one copy each."""
    i, h = ffns[0].shape
    for f in ffns:
        if f.shape != (i, h) or tuple(f.down.shape) != (h, i):
            raise ConfigError(f"experts differ in shape: {f.shape} and {(i, h)}")
    gate_up = torch.empty(len(ffns), h, 2 * i)  # (E, H, 2I)
    down = torch.empty(len(ffns), i, h)  # (E, I, H)
    for e, f in enumerate(ffns):
        gate_up[e, :, :i].copy_(f.gate.t())
        gate_up[e, :, i:].copy_(f.up.t())
        down[e].copy_(f.down.t())
    return gate_up, down


def build_moe_lm(
    cfg: LMConfig,
    dense_state: Mapping[str, Tensor],
    experts: Mapping[int, Sequence[ExpertFFN]],
    routers: Mapping[int, Tensor],
    shared: Mapping[int, tuple[ExpertFFN, Tensor]] | None = None,
    extra: Mapping[int, Mapping[str, Tensor]] | None = None,
) -> LM:
    """Wire a sparse LM from its parts (fp32).

    Args:
        cfg: the sparse config (from :func:`moe_lm_config`, or an MoE model's own).
        dense_state: an LM state dict supplying every non-MoE parameter (embeddings, attention, norms,
            head, and the FFNs of dense layers); its MoE-layer FFN entries are ignored.
        experts: per MoE layer, the E expert FFNs.
        routers: per MoE layer, the (E, H) router rows.
        shared: per MoE layer, the shared expert FFN and its (1, H) sigmoid gate row.
        extra: per MoE layer, any other MoE-layer parameter by its name in the layer (kept as is).

    Returns:
        The LM in eval mode; its parameters equal the parts exactly.

    Raises:
        ConfigError: a part is missing or has the wrong shape (the message names it).
    """
    with torch.device("meta"):
        model = LM(cfg)
    sd: dict[str, Tensor] = {}
    for name, t in dense_state.items():
        m = _FFN_KEY.match(name)
        if m and cfg.is_moe_layer(int(m.group(1))):
            continue
        sd[name] = t.detach().float().clone()  # never alias the dense model's parameters
    for i in range(cfg.num_layers):
        if cfg.is_moe_layer(i):
            sd.update(_moe_layer_state(i, experts, routers, shared, extra))
    _check_state(model.state_dict(), sd, cfg)
    # The parts become the parameters (no second copy of the experts): every tensor is fresh here.
    sd = {k: v.float().contiguous() for k, v in sd.items()}
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["embed.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval()


def _moe_layer_state(
    i: int,
    experts: Mapping[int, Sequence[ExpertFFN]],
    routers: Mapping[int, Tensor],
    shared: Mapping[int, tuple[ExpertFFN, Tensor]] | None,
    extra: Mapping[int, Mapping[str, Tensor]] | None,
) -> dict[str, Tensor]:
    """The state-dict entries of MoE layer ``i`` (router, stacked experts, shared expert, extras)."""
    if i not in experts or i not in routers:
        raise ConfigError(f"layer {i}: no experts or router rows given for an MoE layer")
    p = f"layers.{i}.ffn."
    sd: dict[str, Tensor] = {p + "router.gate.weight": routers[i].detach().clone()}
    sd[p + "experts.gate_up"], sd[p + "experts.down"] = _stack_experts(experts[i])
    if shared is not None and i in shared:
        ffn, gate_row = shared[i]
        sd[p + "shared_expert.gate_proj.weight"] = ffn.gate.clone()
        sd[p + "shared_expert.up_proj.weight"] = ffn.up.clone()
        sd[p + "shared_expert.down_proj.weight"] = ffn.down.clone()
        sd[p + "shared_expert.gate.weight"] = gate_row.reshape(1, -1).clone()
    for name, t in (extra or {}).get(i, {}).items():
        sd[p + name] = t.detach().clone()
    return sd


def _check_state(own: Mapping[str, Tensor], sd: Mapping[str, Tensor], cfg: LMConfig) -> None:
    """Refuse a missing, unexpected or mis-shaped parameter (the message names the first ones)."""
    missing = [k for k in own if k not in sd and not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing:
        raise ConfigError(f"no weights for parameter(s) {', '.join(missing[:5])}")
    for k, v in sd.items():
        if k not in own:
            raise ConfigError(f"unexpected parameter {k}")
        if tuple(own[k].shape) != tuple(v.shape):
            raise ConfigError(f"{k}: shape {tuple(v.shape)}, the config implies {tuple(own[k].shape)}")


def is_dense(model: Any) -> bool:
    """True for an :class:`LM` whose every FFN is a dense SwiGLU."""
    return isinstance(model, LM) and all(isinstance(b, Block) and isinstance(b.ffn, SwiGLU) for b in model.layers)
