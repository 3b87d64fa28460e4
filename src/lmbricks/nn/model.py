"""A reference decoder-only LM: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

Readable in one sitting (nanoGPT is the model). Each layer is pre-norm:
``x = x + attn(norm(x)); x = x + ffn(norm(x))``, where ``ffn`` is a dense gated FFN (SwiGLU by default) or an MoE layer
from ``lmbricks.moe``. The numerics follow Hugging Face Llama exactly (RMSNorm in fp32, RoPE with
``rotate_half``), so weights loaded from Llama / Mistral / Qwen2 / Mixtral / Qwen2-MoE give the same
logits (see ``lmbricks.nn.hf``). q/k/v and gate/up are stored fused (one matmul at inference; in
training each part is its own matmul, ``lmbricks.nn.split_linear``), attention is
``F.scaled_dot_product_attention`` with ``is_causal`` (short bf16 training sequences on CPU:
``lmbricks.nn.attention``, two batched products, faster there), and :meth:`LM.loss` fuses the head with the
cross-entropy (``lmbricks.nn.loss``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbricks.nn.attention import short_causal_applies, short_causal_attention
from lmbricks.nn.config import LMConfig
from lmbricks.nn.ffn import GatedFFN
from lmbricks.nn.ffn import SwiGLU as SwiGLU  # the old import path of the dense FFN
from lmbricks.nn.loss import linear_cross_entropy
from lmbricks.nn.rms_norm import rms_norm
from lmbricks.nn.split_linear import split_linear


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 and cast back (as Llama does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rotary tables for absolute ``positions`` (T,) or (B, T) -> cos, sin of shape (..., T, head_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # (..., T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (..., T, hd): HF's "half split" layout, not interleaved
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, h, T, hd) by the tables (T, hd) or (B, 1, T, hd); pairs are (i, i + hd/2)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Keys and values of past positions, one (B, n_kv, S, hd) pair per layer."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        k = self.keys[0]
        return 0 if k is None else k.shape[2]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's k, v (B, n_kv, T, hd) and return the full ones (B, n_kv, S + T, hd)."""
        pk, pv = self.keys[layer], self.values[layer]
        if pk is not None and pv is not None:
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


def attention_mask(t: int, past: int, window: int | None, device: torch.device) -> tuple[Tensor | None, bool]:
    """The mask for T new queries after ``past`` cached positions: (bool mask (T, S) or None, is_causal).

    None + is_causal covers the common case (no cache, no active window) with SDPA's fast path.
    """
    s = past + t
    if (window is None or s <= window) and (past == 0 or t == 1):
        return None, past == 0 and t > 1
    q = torch.arange(past, s, device=device)[:, None]  # (T, 1) absolute query positions
    k = torch.arange(s, device=device)[None, :]  # (1, S)
    keep = k <= q
    if window is not None:
        keep &= k > q - window
    return keep, False


def segment_positions(doc_ids: Tensor) -> Tensor:
    """Position of each token within its segment: (B, T) segment ids -> (B, T) positions from 0.

    A segment is a maximal run of equal ids (packed examples are contiguous), so position t is
    ``t - start(t)`` where ``start`` is the index of the run's first token.
    """
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, T)
    return idx - start_idx


def segment_mask(doc_ids: Tensor, window: int | None = None) -> Tensor:
    """Block-diagonal causal mask of packed sequences: (B, T) ids -> (B, 1, T, T) bool (True = attend).

    Query t sees key s only when s <= t and both carry the same segment id, so packed examples never
    attend across their boundaries.
    """
    T = doc_ids.shape[1]
    q = torch.arange(T, device=doc_ids.device)[:, None]  # (T, 1)
    k = torch.arange(T, device=doc_ids.device)[None, :]  # (1, T)
    keep = k <= q
    if window is not None:
        keep = keep & (k > q - window)
    same = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    return (same & keep)[:, None]  # (B, 1, T, T)


class LayerCache(Protocol):
    """What attention needs of a KV cache (:class:`KVCache`, or a batched one of a decoder)."""

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's k, v (B, nkv, T, hd) of ``layer``; return all so far (B, nkv, S + T, hd)."""
        ...


@dataclass
class LayerInputs:
    """What every layer's attention reads besides the hidden states: built once per forward pass.

    Attributes:
        cos, sin: rotary tables, (T, hd) for plain positions or (B, 1, T, hd) for packed sequences.
        mask: bool (T, S) or (B, 1, T, S), True = attend; None when ``is_causal`` says it all.
        is_causal: let SDPA apply the causal mask itself (its fast path).
        cache: the KV cache the layers append to, or None.
    """

    cos: Tensor
    sin: Tensor
    mask: Tensor | None
    is_causal: bool
    cache: LayerCache | None = None


class Attention(nn.Module):
    """Grouped-query self-attention with one fused q/k/v projection."""

    def __init__(self, cfg: LMConfig, layer: int) -> None:
        super().__init__()
        assert cfg.head_dim is not None and cfg.num_kv_heads is not None
        self.layer, self.n_head, self.n_kv, self.hd = layer, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, (self.n_head + 2 * self.n_kv) * self.hd, bias=cfg.qkv_bias)
        self.o = nn.Linear(self.n_head * self.hd, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor, inputs: LayerInputs) -> Tensor:
        """(B, T, H) -> (B, T, H); appends this layer's keys and values to ``inputs.cache``."""
        B, T, _ = x.shape
        q, k, v = split_linear(self.qkv, x, (self.n_head * self.hd, self.n_kv * self.hd, self.n_kv * self.hd))
        q = q.view(B, T, self.n_head, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = v.view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        q, k = apply_rope(q, inputs.cos, inputs.sin), apply_rope(k, inputs.cos, inputs.sin)
        if inputs.cache is not None:
            k, v = inputs.cache.update(self.layer, k, v)  # (B, nkv, S, hd)
        if short_causal_applies(q, inputs.is_causal, inputs.mask is not None):
            y = short_causal_attention(q, k, v)  # (B, nh, T, hd)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=inputs.mask, is_causal=inputs.is_causal, enable_gqa=self.n_kv != self.n_head
            )  # (B, nh, T, hd)
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_head * self.hd))


class FFN(Protocol):
    """What a layer's feed-forward block offers the model: the dense gated FFN (``lmbricks.nn.ffn``), or an MoE layer.

    ``forward`` returns the output and the block's auxiliary outputs (an ``lmbricks.moe.MoEAux`` for
    an MoE layer, None for a dense FFN); ``reset_parameters`` draws the model's initialisation:
    Normal(0, std) matrices, Normal(0, out_std) for the projections that write into the residual.
    """

    def __call__(self, x: Tensor) -> tuple[Tensor, Any | None]:
        """(..., H) -> ((..., H), aux or None)."""
        ...

    def reset_parameters(self, std: float, out_std: float) -> None:
        """Re-initialise every matrix in place."""
        ...


class Block(nn.Module):
    """One pre-norm transformer layer; ``ffn`` is an :class:`FFN` (SwiGLU, or MoE where ``cfg`` says)."""

    def __init__(self, cfg: LMConfig, layer: int, ffn: FFN) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.ffn = ffn
        self.is_moe = cfg.is_moe_layer(layer)  # its FFN routes tokens (and returns an MoEAux)

    def forward(self, x: Tensor, inputs: LayerInputs) -> tuple[Tensor, Any]:
        """(B, T, H) -> ((B, T, H), the FFN's aux or None)."""
        x = x + self.attn(self.attn_norm(x), inputs)
        y, aux = self.ffn(self.ffn_norm(x))
        return x + y, aux


@dataclass
class LMOutput:
    """What :meth:`LM.forward` returns."""

    logits: Tensor  # (B, T, V)
    aux: list[Any] = field(default_factory=list)  # one lmbricks.moe.MoEAux per MoE layer, in order


@dataclass
class LMLoss:
    """What :meth:`LM.loss` returns."""

    loss: Tensor  # () mean next-token cross-entropy
    aux: list[Any] = field(default_factory=list)  # one lmbricks.moe.MoEAux per MoE layer, in order


class LM(nn.Module):
    """The decoder-only language model. ``LM(cfg)`` builds it with a fresh initialisation."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i, _make_ffn(cfg, i)) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def reset_parameters(self) -> None:
        """Normal(0, init_std) matrices; residual outputs (o, down) scaled by 1/sqrt(2 L) as in GPT-2."""
        std, out_std = self.cfg.init_std, self.cfg.init_std / math.sqrt(2 * self.cfg.num_layers)
        nn.init.normal_(self.embed.weight, std=std)
        nn.init.normal_(self.lm_head.weight, std=std)
        for block in self.layers:
            assert isinstance(block, Block)
            nn.init.normal_(block.attn.qkv.weight, std=std)
            if block.attn.qkv.bias is not None:
                nn.init.zeros_(block.attn.qkv.bias)
            nn.init.normal_(block.attn.o.weight, std=out_std)
            block.ffn.reset_parameters(std, out_std)

    def forward(self, input_ids: Tensor, cache: KVCache | None = None, doc_ids: Tensor | None = None) -> LMOutput:
        """Logits for ``input_ids`` (B, T), continuing after ``cache`` if given (which is updated).

        Sequences are unpadded (packed training chunks or equal-length prompts). ``doc_ids`` (B, T)
        marks packed examples (contiguous runs of one id): attention is then block-diagonal causal
        and positions restart at 0 in each example, so every example is computed exactly as if it
        were alone (no cache allowed with ``doc_ids``).
        """
        x, aux = self.hidden_states(input_ids, cache, doc_ids)
        return LMOutput(logits=self.lm_head(x), aux=aux)

    def loss(self, input_ids: Tensor, labels: Tensor | None = None, doc_ids: Tensor | None = None) -> LMLoss:
        """Training loss: :func:`lm_loss` of the logits, computed without materialising them.

        The head and the cross-entropy are fused (:func:`lmbricks.nn.loss.linear_cross_entropy`), so
        the (B, T, V) logits are never kept; the value and gradients equal
        ``lm_loss(self(input_ids, doc_ids=doc_ids).logits, input_ids, labels)``.
        """
        x, aux = self.hidden_states(input_ids, None, doc_ids)
        head = self.lm_head
        if type(head) is not nn.Linear or head.bias is not None or head._forward_hooks or head._forward_pre_hooks:
            return LMLoss(loss=lm_loss(head(x), input_ids, labels), aux=aux)  # a wrapped head runs as a module
        targets = next_token_targets(input_ids, labels)
        loss = linear_cross_entropy(x.flatten(0, 1), head.weight, targets.flatten())
        return LMLoss(loss=loss, aux=aux)

    def hidden_states(
        self, input_ids: Tensor, cache: KVCache | None = None, doc_ids: Tensor | None = None
    ) -> tuple[Tensor, list[Any]]:
        """The final-norm hidden states (B, T, H) that the head reads, and the MoE layers' aux."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        x = self.embed(input_ids)  # (B, T, H)
        assert self.cfg.head_dim is not None
        if doc_ids is not None:
            if cache is not None:
                raise ValueError("doc_ids (packed examples) cannot be combined with a KV cache")
            positions = segment_positions(doc_ids)  # (B, T)
            cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hd)
            inputs = LayerInputs(cos, sin, segment_mask(doc_ids, self.cfg.sliding_window), False)
        else:
            positions = torch.arange(past, past + T, device=input_ids.device)
            cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)  # (T, hd)
            inputs = LayerInputs(cos, sin, *attention_mask(T, past, self.cfg.sliding_window, input_ids.device), cache)
        aux: list[Any] = []
        for block in self.layers:
            x, a = block(x, inputs)
            if a is not None:
                aux.append(a)
        return self.norm(x), aux

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, eos_token_id: int | None = None) -> Tensor:
        """Greedy decoding with a KV cache: (B, T) -> (B, T + n) token ids."""
        cache = KVCache(self.cfg.num_layers)
        logits = self(input_ids, cache=cache).logits[:, -1]
        out = [input_ids]
        for _ in range(max_new_tokens):
            nxt = logits.argmax(-1, keepdim=True)  # (B, 1)
            out.append(nxt)
            if eos_token_id is not None and bool((nxt == eos_token_id).all()):
                break
            logits = self(nxt, cache=cache).logits[:, -1]
        return torch.cat(out, dim=1)

    def num_parameters(self) -> int:
        """Unique parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())


def lm_loss(logits: Tensor, input_ids: Tensor, labels: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy of (B, T, V) logits on (B, T) ids (position t predicts t + 1).

    ``labels`` (B, T), aligned with ``input_ids``, replaces them as targets; entries of -100 carry no
    loss (prompt tokens in instruction tuning, padding), and the mean is over the other targets.
    """
    # Shift the targets, not the logits: a (B, T, V) slice would copy the largest tensor of the step.
    targets = next_token_targets(input_ids, labels)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def next_token_targets(input_ids: Tensor, labels: Tensor | None = None) -> Tensor:
    """(B, T) target of each position: the next token (or label); -100 at the last position."""
    source = input_ids if labels is None else labels
    return F.pad(source[:, 1:], (0, 1), value=-100)


def _make_ffn(cfg: LMConfig, layer: int) -> FFN:
    if cfg.is_moe_layer(layer):
        from lmbricks.moe import build_moe

        return build_moe(cfg.moe_config())
    return GatedFFN(cfg.hidden_size, cfg.intermediate_size, cfg.activation, cfg.activation_threshold)
