"""Plugging InfLLM into a model: its attention modules are swapped for memory-backed ones.

Works on lmbricks' own :class:`lmbricks.nn.model.LM` and on transformers Llama / Qwen2 / Mistral
models (anything whose decoder layers hold a ``self_attn`` with ``q_proj``/``k_proj``/``v_proj``/
``o_proj`` and whose ``model.rotary_emb`` gives the RoPE tables). The original modules are kept and
put back by :meth:`MemoryPlug.unplug`: no parameter is copied or changed, so the unplugged model is
the base bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM, Attention
from lmbricks.nn.split_linear import split_linear
from lmbricks.plugins.memory.config import InfLLMConfig
from lmbricks.plugins.memory.store import LayerMemory, Rope


class LMMemoryAttention(nn.Module):
    """lmbricks' :class:`Attention` reading and writing a :class:`LayerMemory` instead of a KV cache."""

    def __init__(self, base: Attention, memory: LayerMemory) -> None:
        super().__init__()
        self.base, self.memory = base, memory

    def forward(self, x: Tensor, inputs: object) -> Tensor:  # noqa: ARG002 (positions come from the memory)
        """(1, T, H) -> (1, T, H); the layer's RoPE tables and mask are ignored."""
        b = self.base
        B, T, _ = x.shape
        q, k, v = split_linear(b.qkv, x, (b.n_head * b.hd, b.n_kv * b.hd, b.n_kv * b.hd))
        q = q.view(T, b.n_head, b.hd).transpose(0, 1)  # (nh, T, hd)
        k = k.view(T, b.n_kv, b.hd).transpose(0, 1)  # (nkv, T, hd)
        v = v.view(T, b.n_kv, b.hd).transpose(0, 1)
        y = self.memory.attend(q, k, v)  # (nh, T, hd)
        return b.o(y.transpose(0, 1).reshape(B, T, b.n_head * b.hd))


class HFMemoryAttention(nn.Module):
    """A transformers Llama/Qwen2 attention reading and writing a :class:`LayerMemory`."""

    def __init__(self, base: nn.Module, memory: LayerMemory) -> None:
        super().__init__()
        self.base: Any = base  # a LlamaAttention / Qwen2Attention (q/k/v/o projections)
        self.memory = memory

    def forward(self, hidden_states: Tensor, **_ignored: object) -> tuple[Tensor, None]:
        """(1, T, H) -> ((1, T, H), None); masks, caches and position embeddings are ignored."""
        b, m = self.base, self.memory
        B, T, _ = hidden_states.shape
        q = b.q_proj(hidden_states).view(T, m.n_head, m.hd).transpose(0, 1)  # (nh, T, hd)
        k = b.k_proj(hidden_states).view(T, m.n_kv, m.hd).transpose(0, 1)  # (nkv, T, hd)
        v = b.v_proj(hidden_states).view(T, m.n_kv, m.hd).transpose(0, 1)
        y = m.attend(q, k, v)
        return b.o_proj(y.transpose(0, 1).reshape(B, T, m.n_head * m.hd)), None


def double_rope(pos: Tensor, inv_freq: Tensor, scaling: float = 1.0) -> tuple[Tensor, Tensor]:
    """RoPE tables (n, hd) fp32 for positions (n,), the angles computed in fp64 (exact at 128k positions)."""
    freqs = pos.double()[:, None] * inv_freq.to(pos.device).double()[None]  # (n, hd / 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # HF's half-split layout
    return (emb.cos() * scaling).float(), (emb.sin() * scaling).float()


def trained_window(model: nn.Module) -> int | None:
    """The model's trained context (``max_position_embeddings``), or None when it does not say."""
    cfg = model.cfg if isinstance(model, LM) else getattr(model, "config", None)
    value = getattr(cfg, "max_position_embeddings", None)
    return int(value) if value is not None else None


def _hf_layers(model: nn.Module) -> tuple[list[nn.Module], Rope]:
    inner = getattr(model, "model", None)
    layers = list(getattr(inner, "layers", []) or [])
    rotary = getattr(inner, "rotary_emb", None)
    if not layers or rotary is None or not all(hasattr(layer, "self_attn") for layer in layers):
        raise ConfigError(
            f"{type(model).__name__}: not a model with attention InfLLM can wrap "
            "(expected lmbricks' LM or a transformers Llama/Qwen2/Mistral: model.layers[i].self_attn)"
        )
    for i, layer in enumerate(layers):
        missing = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj") if not hasattr(layer.self_attn, n)]
        if missing:
            raise ConfigError(f"model.layers.{i}.self_attn: no {', '.join(missing)} (not a Llama-style attention)")

    inv_freq = getattr(rotary, "inv_freq", None)
    if inv_freq is None:
        raise ConfigError(f"{type(model).__name__}.model.rotary_emb: no inv_freq (not a rotary embedding)")
    scaling = float(getattr(rotary, "attention_scaling", 1.0))

    def rope(pos: Tensor) -> tuple[Tensor, Tensor]:
        return double_rope(pos, inv_freq, scaling)

    return layers, rope


class MemoryPlug:
    """Swap every attention of ``model`` for InfLLM memory attention; :meth:`unplug` puts them back.

    Use as a context manager (``with MemoryPlug(model, cfg) as plug: ...``) or call :meth:`plug` /
    :meth:`unplug`. :meth:`reset` empties the memory before a new input (batch size 1).

    Args:
        model: lmbricks' LM or a transformers Llama/Qwen2/Mistral causal LM.
        cfg: InfLLM settings.

    Raises:
        ConfigError: a model without such attention, or a window that does not fit its trained window.
    """

    def __init__(self, model: nn.Module, cfg: InfLLMConfig) -> None:
        self.model, self.cfg = model, cfg
        self.originals: list[tuple[nn.Module, str, nn.Module]] = []  # (parent, attribute, module)
        self.memories: list[LayerMemory] = []
        trained = trained_window(model)
        if isinstance(model, LM):
            self.kind = "lm"
        else:
            _hf_layers(model)
            self.kind = "hf"
        if trained is not None and cfg.positions == "infllm":
            cfg.check_window(trained)

    def _targets(self) -> list[tuple[nn.Module, str, Any, LayerMemory]]:
        if isinstance(self.model, LM):
            c = self.model.cfg
            assert c.head_dim is not None and c.num_kv_heads is not None

            hd = c.head_dim
            inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))

            def rope(pos: Tensor) -> tuple[Tensor, Tensor]:
                return double_rope(pos, inv_freq)

            return [
                (blk, "attn", blk.attn, LayerMemory(self.cfg, c.num_heads, c.num_kv_heads, c.head_dim, rope))
                for blk in self.model.layers
            ]
        layers, hf_rope = _hf_layers(self.model)
        hc: Any = self.model.config
        hd = getattr(hc, "head_dim", None) or hc.hidden_size // hc.num_attention_heads
        return [
            (
                layer,
                "self_attn",
                layer.self_attn,
                LayerMemory(self.cfg, hc.num_attention_heads, hc.num_key_value_heads, hd, hf_rope),
            )
            for layer in layers
        ]

    def plug(self) -> MemoryPlug:
        """Install fresh memories (idempotent: a plugged model is reset)."""
        if self.originals:
            self.unplug()
        for parent, attr, module, memory in self._targets():
            wrapper = LMMemoryAttention(module, memory) if self.kind == "lm" else HFMemoryAttention(module, memory)
            self.originals.append((parent, attr, module))
            self.memories.append(memory)
            setattr(parent, attr, wrapper)
        return self

    def unplug(self) -> None:
        """Put the original attention modules back; the memories are dropped."""
        for parent, attr, module in self.originals:
            setattr(parent, attr, module)
        self.originals, self.memories = [], []

    def reset(self) -> None:
        """Empty the memories (a new input starts)."""
        self.plug()

    def __enter__(self) -> MemoryPlug:
        return self.plug()

    def __exit__(self, *exc: object) -> None:
        self.unplug()

    @property
    def nbytes(self) -> int:
        """Bytes held by the memories of all layers."""
        return sum(m.nbytes for m in self.memories)

    @property
    def num_blocks(self) -> int:
        """Memory blocks held by the first layer (all layers hold as many)."""
        return self.memories[0].num_blocks if self.memories else 0
