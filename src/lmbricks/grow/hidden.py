"""Router-input statistics of a model: what each layer's router would see for some text.

The router of layer i reads the FFN input, ``ffn_norm(x)`` (Hugging Face's
``post_attention_layernorm`` output), so these functions hook that norm on every layer of an
:class:`lmbricks.nn.LM` (dense or MoE), or of a transformers causal LM (the Qwen3 bases lmbricks.nn
does not compute), and reduce its output over tokens. mergekit-moe reads the
residual stream before each layer instead; the router never sees that vector, so lmbricks uses the
normalised FFN input (documented in docs/grow.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.nn.model import LM, Block


def router_norms(model: nn.Module) -> list[nn.Module]:
    """Each layer's FFN-input norm: ``Block.ffn_norm`` of an LM, ``post_attention_layernorm`` of an HF model."""
    if isinstance(model, LM):
        norms: list[nn.Module] = []
        for block in model.layers:
            assert isinstance(block, Block)
            norms.append(block.ffn_norm)
        return norms
    layers = model.get_submodule("model.layers")
    return [layer.get_submodule("post_attention_layernorm") for layer in layers.children()]


def input_embedding(model: nn.Module) -> Tensor:
    """The (V, H) token embedding matrix of an LM or a transformers model (detached)."""
    if isinstance(model, LM):
        return model.embed.weight.detach()
    embed = model.get_submodule("model.embed_tokens")
    assert isinstance(embed, nn.Embedding)
    return embed.weight.detach()


class _NormTap:
    """Forward hooks on every layer's FFN-input norm; ``reduce`` turns (B, T, H) into (H,) per call."""

    def __init__(self, model: nn.Module, reduce: Callable[[Tensor], Tensor]) -> None:
        norms = router_norms(model)
        self.sums: list[Tensor | None] = [None] * len(norms)
        self.reduce = reduce
        self.handles = []
        for i, norm in enumerate(norms):
            self.handles.append(norm.register_forward_hook(self._hook(i)))

    def _hook(self, i: int) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Tensor) -> None:
            r = self.reduce(output.detach().float())  # (H,)
            prev = self.sums[i]
            self.sums[i] = r if prev is None else prev + r

        return hook

    def stacked(self) -> Tensor:
        """(L, H) accumulated statistic of every layer."""
        if any(s is None for s in self.sums):
            raise ValueError("no forward pass was recorded")
        return torch.stack([s for s in self.sums if s is not None])

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def mean_router_inputs(model: nn.Module, blocks: Tensor, batch_size: int = 4) -> Tensor:
    """Mean router input per layer over every token of ``blocks``.

    Args:
        model: the LM or transformers causal LM (eval mode).
        blocks: (N, T) token ids.
        batch_size: blocks per forward pass.

    Returns:
        (L, H) fp32, L = all layers of the model.
    """
    tap = _NormTap(model, lambda h: h.reshape(-1, h.shape[-1]).sum(0))
    try:
        for b in range(0, len(blocks), batch_size):
            model(blocks[b : b + batch_size])
    finally:
        tap.close()
    return tap.stacked() / blocks.numel()


def prompt_ids(tokenizer: Any, prompt: str) -> Tensor:
    """(1, T) ids of ``prompt`` after the BOS token (mergekit prepends ``bos_token`` the same way)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        ids = [int(bos)] + list(ids)
    if not ids:
        raise ConfigError(f"prompt {prompt!r} has no tokens (and the tokenizer has no BOS token)")
    return torch.tensor([ids], dtype=torch.long)


@torch.no_grad()
def prompt_router_inputs(model: nn.Module, tokenizer: Any, prompts: Sequence[str], average: bool = False) -> Tensor:
    """Router input per layer for prompts, averaged over the prompts.

    Each prompt runs alone (no padding: mergekit pads a batch on the right and then reads the last
    position, which for shorter prompts is a padding token).

    Args:
        model: the LM or transformers causal LM (eval mode).
        tokenizer: its tokenizer.
        prompts: the texts.
        average: mean over the prompt's tokens (mergekit's ``hidden_avg``) instead of the last token.

    Returns:
        (L, H) fp32.
    """
    reduce = (lambda h: h[0].mean(0)) if average else (lambda h: h[0, -1])
    tap = _NormTap(model, reduce)
    try:
        for p in prompts:
            model(prompt_ids(tokenizer, p))
    finally:
        tap.close()
    return tap.stacked() / len(prompts)


def cheap_embedding(embed: Tensor, tokenizer: Any, prompts: Sequence[str]) -> Tensor:
    """Sum of the token embeddings of all prompts (with their BOS): mergekit's ``cheap_embed``.

    Args:
        embed: (V, H) embedding matrix.
        tokenizer: the tokenizer.
        prompts: the texts.

    Returns:
        (H,) fp32 (normalised later, so the sum and the mean give the same row).
    """
    total = torch.zeros(embed.shape[1])
    for p in prompts:
        total += embed[prompt_ids(tokenizer, p)[0]].float().sum(0)
    return total


def domain_blocks(tokenizer: Any, texts: Sequence[str], max_tokens: int, seq_len: int = 256, seed: int = 0) -> Tensor:
    """Token blocks sampled across a domain's documents.

    Documents are visited in an order shuffled with ``seed`` and each contributes at most
    ``max(max_tokens // len(texts), 32)`` tokens (its beginning), so the statistic describes the
    domain rather than its first file. Documents are separated by EOS and packed into blocks.

    Args:
        tokenizer: the tokenizer (with an EOS token).
        texts: the domain's documents.
        max_tokens: tokens to keep.
        seq_len: tokens per block (at most ``max_tokens``).
        seed: the shuffle seed.

    Returns:
        (N, T) long, N >= 1, T = min(seq_len, max_tokens).

    Raises:
        ValueError: the texts hold fewer than T tokens.
    """
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cap = max(max_tokens // max(len(texts), 1), 32)
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for i in order:
        # Tokenise only a prefix (BPE tokens rarely exceed four characters), then keep `cap` tokens.
        ids = tokenizer(texts[i][: cap * 4], add_special_tokens=False)["input_ids"][:cap]
        stream.extend(int(t) for t in ids)
        if eos is not None:
            stream.append(int(eos))
        if len(stream) >= max_tokens:
            break
    seq_len = min(seq_len, max_tokens)
    n = min(len(stream), max_tokens) // seq_len
    if n == 0:
        raise ValueError(f"fewer than {seq_len} tokens of text")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (N, T)
