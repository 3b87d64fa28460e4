"""Find the feed-forward blocks of a Hugging Face causal LM and read their parts.

Every analysis in :mod:`lmbricks.analysis` and :mod:`lmbricks.moefy` works on the *intermediate
activation* ``a`` of a feed-forward block, the input of its down (output) projection:

* gated (SwiGLU / GeGLU: Llama, Mistral, Qwen2, Gemma3): ``a = act(x W_gate^T) * (x W_up^T)``;
* plain (GELU / ReLU MLP: OPT, GPT-NeoX, ...): ``a = act(x W_in^T + b)``;

and ``y = a W_down^T (+ b)``. Neuron ``i`` is column ``i`` of ``W_down``: its contribution to the
output is ``a_i * W_down[:, i]``, of norm ``|a_i| * ||W_down[:, i]||``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lmbricks.errors import ConfigError

# (gate, up/in, down) attribute names, tried in order on every sub-module.
_GLU_NAMES = ("gate_proj", "up_proj", "down_proj")
_MLP_NAMES = (("fc1", "fc2"), ("dense_h_to_4h", "dense_4h_to_h"), ("up_proj", "down_proj"))
_ACT_NAMES = ("act_fn", "activation_fn", "act")


@dataclass
class FFNBlock:
    """One feed-forward block of a model.

    Attributes:
        layer: index among the model's FFN blocks (the decoder layer for one FFN per layer).
        name: the module's qualified name in the model.
        module: the module that owns the projections.
        gate: the gate projection (gated FFNs), else None.
        up: the up (gated) or input (plain) projection, weight (I, H).
        down: the output projection, weight (H, I).
        act: the activation applied to the gate (gated) or the input projection (plain).
    """

    layer: int
    name: str
    module: nn.Module
    gate: nn.Linear | None
    up: nn.Linear
    down: nn.Linear
    act: Any

    @property
    def kind(self) -> Literal["glu", "mlp"]:
        """``glu`` for gated FFNs, ``mlp`` for plain ones."""
        return "glu" if self.gate is not None else "mlp"

    @property
    def width(self) -> int:
        """Number of intermediate neurons I."""
        return int(self.down.weight.shape[1])

    @property
    def hidden(self) -> int:
        """Model width H."""
        return int(self.down.weight.shape[0])

    def down_norms(self) -> torch.Tensor:
        """(I,) fp32 L2 norms of the columns of ``W_down``: each neuron's output-vector norm."""
        return self.down.weight.detach().float().norm(dim=0)

    def routing_rows(self) -> torch.Tensor:
        """(I, H) the rows that decide whether a neuron fires: gate rows (gated) or input rows (plain)."""
        proj = self.gate if self.gate is not None else self.up
        return proj.weight.detach().float()

    def intermediate(self, x: torch.Tensor) -> torch.Tensor:
        """The intermediate activation ``a`` for FFN inputs ``x`` (..., H) -> (..., I)."""
        if self.gate is not None:
            return self.act(self.gate(x)) * self.up(x)
        return self.act(self.up(x))


def _linear(module: nn.Module, name: str) -> nn.Linear | None:
    child = getattr(module, name, None)
    return child if isinstance(child, nn.Linear) else None


def _act(module: nn.Module) -> Any:
    for name in _ACT_NAMES:
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None


def _as_block(module: nn.Module) -> tuple[nn.Linear | None, nn.Linear, nn.Linear] | None:
    gate, up, down = (_linear(module, n) for n in _GLU_NAMES)
    if gate is not None and up is not None and down is not None:
        return gate, up, down
    for in_name, out_name in _MLP_NAMES:
        fc_in, fc_out = _linear(module, in_name), _linear(module, out_name)
        if fc_in is not None and fc_out is not None and fc_in.weight.shape[::-1] == fc_out.weight.shape:
            return None, fc_in, fc_out
    return None


def find_ffns(model: nn.Module) -> list[FFNBlock]:
    """The feed-forward blocks of ``model``, in module order.

    Gated blocks (``gate_proj``/``up_proj``/``down_proj``, the Llama, Mistral, Qwen2 and Gemma3
    families) and plain MLPs (``fc1``/``fc2``, ``dense_h_to_4h``/``dense_4h_to_h``) are found by
    their projection names; routed-expert blocks (Mixtral, Qwen2-MoE) are refused.

    Args:
        model: a Hugging Face causal LM (or any module tree with such blocks).

    Returns:
        One :class:`FFNBlock` per block, ``layer`` numbered from 0.

    Raises:
        ConfigError: the model is an MoE already, or no FFN block is recognised.
    """
    config: Any = getattr(model, "config", None)
    experts = [getattr(config, key, None) for key in ("num_local_experts", "num_experts")]
    if any(isinstance(e, int) and e > 0 for e in experts):
        raise ConfigError(
            f"model_type {getattr(config, 'model_type', '?')!r} is a mixture of experts already; "
            "activation analysis and MoEfication need a dense model"
        )
    blocks: list[FFNBlock] = []
    for name, module in model.named_modules():
        parts = _as_block(module)
        if parts is None:
            continue
        gate, up, down = parts
        act = _act(module)
        if act is None:
            raise ConfigError(f"FFN block {name!r} has no activation attribute ({', '.join(_ACT_NAMES)})")
        blocks.append(FFNBlock(len(blocks), name, module, gate, up, down, act))
    if not blocks:
        kind = getattr(config, "model_type", type(model).__name__)
        raise ConfigError(
            f"no feed-forward block recognised in {kind!r}: expected modules with "
            "gate_proj/up_proj/down_proj (Llama, Mistral, Qwen2, Gemma3) or fc1/fc2 projections"
        )
    return blocks
