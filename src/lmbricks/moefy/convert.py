"""Convert a dense Hugging Face model into a MoEfied one, in memory.

Steps per FFN layer: (1) partition the neurons into E equal groups (:mod:`lmbricks.moefy.cluster`);
(2) reorder gate rows, up rows and down columns by the same permutation, so expert e is the
neurons ``[e n, (e + 1) n)``; (3) build its router; (4) swap the block for a
:class:`~lmbricks.moefy.runtime.MoefiedFFN`. The calibration corpus (train split) gives the FFN
inputs that the co-activation split and the MLP router learn from; layers are converted in order
during one forward pass, so each learns from the inputs its MoEfied predecessors produce.
With ``shared_experts`` S > 0, step (1) first takes the ``S n`` most activated neurons
(:func:`shared_neurons`) as experts ``0 .. S-1`` and partitions only the others into ``E - S``
routed experts, whose router is fitted as for a model of ``E - S`` experts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.analysis.corpus import domain_chunks
from lmbricks.analysis.ffn import FFNBlock, find_ffns
from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.errors import ConfigError
from lmbricks.moefy.cluster import (
    balanced_kmeans,
    captured_share,
    coactivation_features,
    gate_features,
    partition_permutation,
    random_partition,
    refine_partition,
)
from lmbricks.moefy.cmoe import activation_markers
from lmbricks.moefy.config import DENSE_GLU_TYPES, MoefyConfig
from lmbricks.moefy.routers import MOEFY_ROUTERS, RouterFit, expert_mass
from lmbricks.moefy.runtime import Mode, MoefiedFFN
from lmbricks.moefy.selection import routed_mask, topk_mask

_MAX_CLUSTER_ROWS = 8192  # calibration tokens used as co-activation features


@dataclass
class MoefyInfo:
    """What a conversion did, per layer.

    Attributes:
        permutations: (I,) neuron order per layer (expert e = positions [e n, (e + 1) n)).
        oracle_share: per layer, the mean share of calibration mass in the top-K experts.
        router_recall: per layer, the share of the oracle's top-K experts that the router picks
            on the calibration tokens.
        calib_tokens: calibration tokens seen.
    """

    permutations: list[Tensor] = field(default_factory=list)
    oracle_share: list[float] = field(default_factory=list)
    router_recall: list[float] = field(default_factory=list)
    calib_tokens: int = 0


def check_moefiable(hf_config: dict[str, Any], config: MoefyConfig) -> None:
    """Fail before any work if the architecture or the expert count does not fit.

    Args:
        hf_config: the model's config.json as a dict.
        config: the MoEfication settings.

    Raises:
        ConfigError: unsupported ``model_type`` (or already an MoE), or E not dividing the width.
    """
    model_type = hf_config.get("model_type")
    if model_type not in DENSE_GLU_TYPES:
        raise ConfigError(
            f"model_type {model_type!r} is not supported by moefy (supported: {', '.join(DENSE_GLU_TYPES)}; "
            "MoEfication needs a dense model with gate_proj/up_proj/down_proj FFNs)"
        )
    width = hf_config.get("intermediate_size")
    if not isinstance(width, int):
        raise ConfigError("config.json has no integer intermediate_size")
    config.check_width(width, f"model_type {model_type!r}")


class _StopForward(Exception):
    """Raised after the last FFN of a calibration pass: the LM head's logits are not needed."""


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def moefied_layers(model: nn.Module) -> list[MoefiedFFN]:
    """The :class:`MoefiedFFN` modules of a model, in order."""
    return [m for m in model.modules() if isinstance(m, MoefiedFFN)]


def set_routing(
    model: nn.Module,
    mode: Mode | None = None,
    top_k: int | None = None,
    dynamic_threshold: float | None | str = "keep",
    skip_zeros: bool | None = None,
) -> None:
    """Change how every MoEfied FFN of ``model`` selects experts.

    Args:
        model: a MoEfied model.
        mode: ``router``, ``oracle`` or ``dense`` (None: unchanged).
        top_k: experts per token (None: unchanged).
        dynamic_threshold: a mass share for dynamic K, None to switch it off, "keep" to leave it.
        skip_zeros: zero-skipping of neurons whose gate activation is exactly zero (router mode;
            None: unchanged, by default on for ReLU-family gates).
    """
    layers = moefied_layers(model)
    if not layers:
        raise ConfigError("the model has no MoEfied FFN")
    for layer in layers:
        if mode is not None:
            if mode == "router" and layer.router is None:
                raise ConfigError("this MoEfied model has no router; use mode 'oracle' or 'dense'")
            layer.mode = mode
        if top_k is not None:
            if not 1 <= top_k <= layer.routed_experts:
                raise ConfigError(f"top_k must be in [1, {layer.routed_experts}] (routed experts), got {top_k}")
            layer.top_k = top_k
        if dynamic_threshold != "keep":
            layer.dynamic_threshold = dynamic_threshold  # type: ignore[assignment]
        if skip_zeros is not None:
            layer.skip_zeros = skip_zeros


def mean_fraction(model: nn.Module) -> float:
    """Experts used / E in the last forward, averaged over layers."""
    layers = moefied_layers(model)
    return sum(m.last_fraction for m in layers) / len(layers)


def partition_layer(
    block: FFNBlock, a: Tensor | None, config: MoefyConfig, seed: int, neurons: Tensor | None = None
) -> Tensor:
    """(I,) expert labels of one layer's neurons for ``config.split`` (``config.experts`` groups).

    Args:
        block: the dense FFN.
        a: (N, I) its intermediate activations on calibration tokens (needed by ``coactivation``).
        config: the settings.
        seed: k-means initialisation / random split seed.
        neurons: (R,) only these neurons are partitioned (labels (R,)); None: all of them.
    """
    width = block.width if neurons is None else neurons.numel()
    if config.split == "random":
        return random_partition(width, config.experts, seed)
    if config.split == "kmeans":
        rows = block.routing_rows() if neurons is None else block.routing_rows()[neurons]
        return balanced_kmeans(gate_features(rows), config.experts, config.kmeans_iters, seed)
    if a is None:
        raise ConfigError("the co-activation split needs calibration activations")
    mass = a.abs() * block.down_norms()  # (N, I)
    if neurons is not None:
        mass = mass[:, neurons]  # (N, R)
    step = max(1, mass.shape[0] // _MAX_CLUSTER_ROWS)
    labels = balanced_kmeans(coactivation_features(mass[::step]), config.experts, config.kmeans_iters, seed)
    if config.refine_iters:
        ks = tuple(sorted({max(1, config.top_k // 2), config.top_k}))
        labels = refine_partition(mass, labels, config.experts, ks, config.refine_iters)
    return labels


def shared_neurons(a: Tensor, config: MoefyConfig) -> Tensor:
    """(S n,) sorted: the neurons most often among a token's ``(S + K) n`` largest ``|a|`` (CMoE's rate).

    Args:
        a: (N, I) calibration activations (the down projection's input).
        config: experts E, shared_experts S and top_k K.
    """
    n = a.shape[1] // config.experts
    rate = activation_markers(a, (config.shared_experts + config.top_k) * n).float().mean(0)  # (I,)
    return torch.argsort(rate, descending=True, stable=True)[: config.shared_experts * n].sort().values


def layer_permutation(block: FFNBlock, a: Tensor | None, config: MoefyConfig, seed: int) -> Tensor:
    """(I,) neuron order of one layer: the shared experts' neurons first, then each routed expert's."""
    if not config.shared_experts:
        return partition_permutation(partition_layer(block, a, config, seed), config.experts)
    if a is None:
        raise ConfigError("shared_experts: choosing the shared neurons needs calibration activations")
    shared = shared_neurons(a, config)
    rest = torch.ones(block.width, dtype=torch.bool)
    rest[shared] = False
    routed = rest.nonzero().squeeze(1)  # (R,)
    labels = partition_layer(block, a, config.routed(), seed, routed)
    return torch.cat([shared, routed[partition_permutation(labels, config.experts - config.shared_experts)]])


def _convert_block(block: FFNBlock, x: Tensor | None, config: MoefyConfig, info: MoefyInfo) -> MoefiedFFN:
    """Partition, permute and route one dense FFN; ``x`` (N, H) are its calibration inputs or None."""
    seed = config.seed + block.layer
    with torch.no_grad():
        a = block.intermediate(x).float() if x is not None else None  # (N, I)
    perm = layer_permutation(block, a, config, seed)
    info.permutations.append(perm)
    s, routed = config.shared_experts, config.routed()
    assert block.gate is not None
    with torch.no_grad():
        gate = block.gate.weight.detach()[perm]
        up = block.up.weight.detach()[perm]
        down = block.down.weight.detach()[:, perm]
    ffn = MoefiedFFN.from_dense(
        gate, up, down, config.experts, block.act, None, config.top_k, config.dynamic_threshold, s
    )
    target = None
    if x is not None and a is not None:
        a = a[:, perm]
        with torch.no_grad():
            mass = expert_mass(a, ffn.down_norms, config.experts)[:, s:]  # (N, E - S) the routed experts
            target = ffn.oracle_scores(a)[:, s:]  # (N, E - S) what the oracle ranks by
        info.oracle_share.append(captured_share(mass, torch.arange(routed.experts), routed.experts, config.top_k))
    router = MOEFY_ROUTERS[config.router].fit(RouterFit(gate[s * ffn.expert_size :], x, target, routed, seed))
    if x is not None and target is not None:
        router.top_k = config.top_k  # recall of the top-K, also with dynamic K
        with torch.no_grad():
            chosen = routed_mask(router(x.float()), routed.experts)
            best = topk_mask(target, config.top_k)
        info.router_recall.append(float((chosen & best).sum() / best.sum()))
    ffn.use_router(router)
    return ffn.to(block.down.weight.dtype)


def moefy_model(
    model: nn.Module,
    tokenizer: Any,
    config: MoefyConfig,
    texts_of: Callable[[str, str], list[str]] | None = None,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    on_step: Callable[[str], None] | None = None,
) -> MoefyInfo:
    """Turn every FFN of ``model`` into a :class:`MoefiedFFN` in place.

    When the split or the router needs data, the conversion is *sequential* in one forward pass
    of the calibration blocks (train split) as a single batch: a hook on each dense FFN converts it
    from the inputs it receives, then returns the converted FFN's routed output, so layer ``l``
    is partitioned and its router trained on the inputs that the already MoEfied layers ``< l``
    produce, the distribution it will see when the model runs. The pass stops after the last FFN.

    Args:
        model: a dense Hugging Face causal LM (Llama, Mistral, Qwen2, Gemma3 families), eval mode.
        tokenizer: its tokenizer (for the calibration corpus).
        config: experts, top-K, split and router.
        texts_of: ``(domain, split) -> documents`` (default :func:`lmbricks.data.load_texts`).
        domains: calibration domains (train split).
        on_step: progress callback, one description per step.

    Returns:
        A :class:`MoefyInfo` (permutations, oracle mass shares, router recall).

    Raises:
        ConfigError: unsupported architecture or E not dividing the width (before any work).
    """
    step = on_step or (lambda _msg: None)
    blocks = _moefiable_blocks(model, config)
    info = MoefyInfo()

    def convert(block: FFNBlock, x: Tensor | None) -> MoefiedFFN:
        step(f"layer {block.layer}: {config.split} split, {config.router} router")
        ffn = _convert_block(block, x, config, info)
        parent, attr = _parent(model, block.name)
        setattr(parent, attr, ffn)
        return ffn

    if config.split != "coactivation" and not MOEFY_ROUTERS[config.router].needs_data and not config.shared_experts:
        for block in blocks:
            convert(block, None)
        return info
    chunks = domain_chunks(tokenizer, domains, "train", config.calib_chunks, config.calib_seq_len, texts_of)
    ids = torch.cat(list(chunks.values()))  # (B, T) every domain in one batch
    info.calib_tokens = ids.numel()
    step(f"calibration pass ({ids.shape[0]} x {ids.shape[1]} tokens, train split)")
    _sequential_pass(model, blocks, ids, convert)
    return info


def _moefiable_blocks(model: nn.Module, config: MoefyConfig) -> list[FFNBlock]:
    """The model's FFN blocks, after checking the architecture and that E divides every width."""
    hf_config: Any = getattr(model, "config", None)
    check_moefiable(hf_config.to_dict() if hf_config is not None else {}, config)
    blocks = find_ffns(model)
    for block in blocks:
        if block.kind != "glu":
            raise ConfigError(f"{block.name}: moefy supports gated FFNs only")
        config.check_width(block.width, block.name)
    return blocks


def _sequential_pass(
    model: nn.Module, blocks: Sequence[FFNBlock], ids: Tensor, convert: Callable[[FFNBlock, Tensor], MoefiedFFN]
) -> None:
    """One forward of ``ids`` (B, T) in which each dense FFN is converted from the inputs it receives.

    A hook on each block converts it, then returns the converted FFN's output, so later layers see
    the MoEfied model's activations; the pass stops after the last FFN (no LM head).
    """
    last = blocks[-1].layer

    def converter(block: FFNBlock) -> Callable[..., Tensor]:
        def hook(_module: Any, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
            x = args[0]
            ffn = convert(block, x.reshape(-1, x.shape[-1]))
            if block.layer == last:
                raise _StopForward
            return ffn(x).to(output.dtype)  # downstream layers see the MoEfied output

        return hook

    handles = [b.module.register_forward_hook(converter(b)) for b in blocks]
    try:
        with torch.no_grad():
            model(input_ids=ids)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
