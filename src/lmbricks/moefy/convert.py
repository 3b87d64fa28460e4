"""Convert a dense Hugging Face model into a MoEfied one, in memory.

Steps per FFN layer: (1) partition the neurons into E equal groups (:mod:`lmbricks.moefy.cluster`);
(2) reorder gate rows, up rows and down columns by the same permutation, so expert e is the
neurons ``[e n, (e + 1) n)``; (3) build its router; (4) swap the block for a
:class:`~lmbricks.moefy.runtime.MoefiedFFN`. The calibration corpus (train split) gives the FFN
inputs that the co-activation split and the MLP router learn from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.analysis.corpus import domain_chunks
from lmbricks.analysis.ffn import FFNBlock, find_ffns
from lmbricks.analysis.hooks import tap_activations
from lmbricks.errors import ConfigError
from lmbricks.moefy.cluster import (
    balanced_kmeans,
    captured_share,
    coactivation_features,
    gate_features,
    partition_permutation,
    random_partition,
)
from lmbricks.moefy.config import DENSE_GLU_TYPES, MoefyConfig
from lmbricks.moefy.routers import CentroidRouter, expert_mass, train_mlp_router
from lmbricks.moefy.runtime import Mode, MoefiedFFN

_MAX_CLUSTER_ROWS = 8192  # calibration tokens used as co-activation features


@dataclass
class MoefyInfo:
    """What a conversion did, per layer.

    Attributes:
        permutations: (I,) neuron order per layer (expert e = positions [e n, (e + 1) n)).
        oracle_share: per layer, the mean share of calibration mass in the top-K experts.
        calib_tokens: calibration tokens seen.
    """

    permutations: list[Tensor] = field(default_factory=list)
    oracle_share: list[float] = field(default_factory=list)
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


def capture_inputs(
    model: nn.Module, blocks: Sequence[FFNBlock], chunks: dict[str, Tensor], batch_size: int = 2
) -> list[Tensor]:
    """(N, H) fp32 FFN inputs per layer on the calibration blocks (all domains concatenated)."""
    rows: list[list[Tensor]] = [[] for _ in blocks]
    with (
        torch.no_grad(),
        tap_activations(
            blocks,
            lambda _i, _a: None,
            on_input=lambda i, x: rows[i].append(x.reshape(-1, x.shape[-1]).float()),
        ),
    ):
        for ids in chunks.values():
            for start in range(0, ids.shape[0], batch_size):
                model(input_ids=ids[start : start + batch_size])
    return [torch.cat(r) for r in rows]


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
) -> None:
    """Change how every MoEfied FFN of ``model`` selects experts.

    Args:
        model: a MoEfied model.
        mode: ``router``, ``oracle`` or ``dense`` (None: unchanged).
        top_k: experts per token (None: unchanged).
        dynamic_threshold: a mass share for dynamic K, None to switch it off, "keep" to leave it.
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
            if not 1 <= top_k <= layer.n_experts:
                raise ConfigError(f"top_k must be in [1, {layer.n_experts}], got {top_k}")
            layer.top_k = top_k
        if dynamic_threshold != "keep":
            layer.dynamic_threshold = dynamic_threshold  # type: ignore[assignment]


def mean_fraction(model: nn.Module) -> float:
    """Experts used / E in the last forward, averaged over layers."""
    layers = moefied_layers(model)
    return sum(m.last_fraction for m in layers) / len(layers)


def partition_layer(block: FFNBlock, x: Tensor | None, config: MoefyConfig, seed: int) -> Tensor:
    """(I,) expert labels of one layer's neurons for ``config.split``."""
    if config.split == "random":
        return random_partition(block.width, config.experts, seed)
    if config.split == "kmeans":
        return balanced_kmeans(gate_features(block.routing_rows()), config.experts, config.kmeans_iters, seed)
    if x is None:
        raise ConfigError("the co-activation split needs calibration inputs")
    step = max(1, x.shape[0] // _MAX_CLUSTER_ROWS)
    with torch.no_grad():
        a = block.intermediate(x[::step])
    mass = a.abs() * block.down_norms()
    return balanced_kmeans(coactivation_features(mass), config.experts, config.kmeans_iters, seed)


def moefy_model(
    model: nn.Module,
    tokenizer: Any,
    config: MoefyConfig,
    texts_of: Callable[[str, str], list[str]] | None = None,
    domains: Sequence[str] = ("en_prose", "code", "math", "zh", "dialogue"),
    on_step: Callable[[str], None] | None = None,
) -> MoefyInfo:
    """Turn every FFN of ``model`` into a :class:`MoefiedFFN` in place.

    Args:
        model: a dense Hugging Face causal LM (Llama, Mistral, Qwen2, Gemma3 families), eval mode.
        tokenizer: its tokenizer (for the calibration corpus).
        config: experts, top-K, split and router.
        texts_of: ``(domain, split) -> documents`` (default :func:`lmbricks.data.load_texts`).
        domains: calibration domains (train split).
        on_step: progress callback, one description per step.

    Returns:
        A :class:`MoefyInfo` (permutations and oracle mass shares).

    Raises:
        ConfigError: unsupported architecture or E not dividing the width (before any work).
    """
    step = on_step or (lambda _msg: None)
    hf_config: Any = getattr(model, "config", None)
    check_moefiable(hf_config.to_dict() if hf_config is not None else {}, config)
    blocks = find_ffns(model)
    for block in blocks:
        if block.kind != "glu":
            raise ConfigError(f"{block.name}: moefy supports gated FFNs only")
        config.check_width(block.width, block.name)
    info = MoefyInfo()
    inputs: list[Tensor | None] = [None] * len(blocks)
    if config.split == "coactivation" or config.router == "mlp":
        step("calibration forward (train split)")
        chunks = domain_chunks(
            tokenizer, domains, "train", config.calib_chunks, config.calib_seq_len, texts_of
        )
        inputs = list(capture_inputs(model, blocks, chunks))
        info.calib_tokens = sum(c.numel() for c in chunks.values())
    for block, x in zip(blocks, inputs, strict=True):
        step(f"layer {block.layer}: {config.split} split, {config.router} router")
        labels = partition_layer(block, x, config, config.seed + block.layer)
        perm = partition_permutation(labels, config.experts)
        info.permutations.append(perm)
        assert block.gate is not None
        with torch.no_grad():
            gate = block.gate.weight.detach()[perm]
            up = block.up.weight.detach()[perm]
            down = block.down.weight.detach()[:, perm]
        ffn = MoefiedFFN.from_dense(gate, up, down, config.experts, block.act, None, config.top_k)
        router: nn.Module
        if config.router == "centroid":
            router = CentroidRouter.from_rows(gate, config.experts)
        if x is not None:
            with torch.no_grad():
                mass = expert_mass(ffn._dense_a(x), ffn.down_norms, config.experts)
            info.oracle_share.append(
                float(captured_share(mass, torch.arange(config.experts), config.experts, config.top_k))
            )
            if config.router == "mlp":
                router = train_mlp_router(
                    x,
                    mass,
                    config.label_k or config.top_k,
                    config.router_hidden,
                    config.router_steps,
                    config.router_lr,
                    seed=config.seed + block.layer,
                )
        ffn.router = router
        ffn.mode = "router"
        ffn.dynamic_threshold = config.dynamic_threshold
        parent, attr = _parent(model, block.name)
        setattr(parent, attr, ffn.to(block.down.weight.dtype))
    return info
