"""Batched, KV-cached sampling of several responses per prompt from an :class:`lmbricks.nn.LM`.

Every prompt is repeated ``n`` times; rows are decoded ``batch_size`` at a time, left-padded (the
padding is masked out as a key and skipped in the rotary positions, the layout of
:mod:`lmbricks.eval.fewshot.generate`), into a preallocated KV cache, so one decoding step is one
forward of (B, 1) tokens. Tokens are drawn with one ``torch.Generator``: the same seed gives the same
samples. A row stops at the end-of-sequence token (kept in its response); finished rows are dropped
from the batch once they are half of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from lmbricks.errors import ConfigError


class SamplingConfig(BaseModel):
    """How responses are drawn from the policy."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1, description="response length budget (tokens)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature (1: the policy's own distribution)")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens (0: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (1: all)")
    batch_size: int = Field(64, ge=1, description="sequences decoded together")
    chat: bool = Field(True, description="format prompts with the policy's chat template (when it has one)")


@dataclass
class Samples:
    """Responses drawn for each prompt: ``responses[i][j]`` is the j-th sample of prompt i (token ids,
    EOS included when reached) and ``texts[i][j]`` its decoded text."""

    prompt_ids: list[list[int]]
    responses: list[list[list[int]]]
    texts: list[list[str]]

    @property
    def tokens(self) -> int:
        """Response tokens sampled in all."""
        return sum(len(r) for rows in self.responses for r in rows)


def load_policy(ref: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """The policy as an :class:`lmbricks.nn.LM` with its tokenizer.

    Raises:
        ConfigError: an architecture lmbricks.nn does not run, or a directory without a tokenizer.
    """
    from lmbricks.nn.load import load_model

    model, tok = load_model(ref, dtype=dtype, hf_fallback=False)
    if tok is None:
        raise ConfigError(f"policy {ref!r}: no tokenizer files")
    return model, tok


def encode_policy_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids of each prompt: the chat template with a generation prompt when ``chat`` and the
    tokenizer has one, else the plain text.

    Raises:
        ConfigError: no prompts, or an empty one (named by its index).
    """
    from lmbricks.proxy.decode import encode_prompts

    if not prompts:
        raise ConfigError("no prompts")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ConfigError(f"prompt {i} is empty")
    use_chat = chat and getattr(tokenizer, "chat_template", None) is not None
    return encode_prompts(tokenizer, prompts, use_chat)


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Temperature, top-k and top-p applied to (B, V) fp32 logits (removed entries become -inf)."""
    scores = logits / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(scores, min(cfg.top_k, scores.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if cfg.top_p < 1.0:
        srt, idx = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(srt, dim=-1)
        drop = probs.cumsum(-1) - probs > cfg.top_p  # keep the smallest prefix reaching top_p
        scores = scores.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return scores


@torch.no_grad()
def _sample_rows(
    model: Any, rows: Sequence[Sequence[int]], cfg: SamplingConfig, gen: torch.Generator, eos: int | None, pad: int
) -> list[list[int]]:
    """Sampled continuations of a batch of prompts (B rows), each up to ``cfg.max_new_tokens`` tokens."""
    from lmbricks.eval.fewshot.generate import _BatchCache, _forward_rows, _rest_layout

    if model.cfg.sliding_window is not None:  # the step masks below have no window
        raise ConfigError("sampling from a sliding-window model is not supported")
    device = next(model.parameters()).device
    B, L = len(rows), max(len(r) for r in rows)
    ids, positions, mask, keys_ok, _ = _rest_layout(rows, 0, pad, None, device)
    empty: list[Tensor | None] = [None] * model.cfg.num_layers
    cache = _BatchCache(empty, empty, B, L + cfg.max_new_tokens, (model.cfg.num_kv_heads, model.cfg.head_dim),
                        model.embed.weight.dtype, device)  # fmt: skip
    logits = _forward_rows(model, ids, positions, mask[:, None], cache)  # (B, V)
    next_pos = torch.tensor([len(r) for r in rows], device=device)  # (B,)
    out: list[list[int]] = [[] for _ in rows]
    live = list(range(B))  # the original row of each batch row still decoding
    for step in range(cfg.max_new_tokens):
        probs = torch.softmax(filter_logits(logits.float(), cfg), dim=-1)  # (B', V)
        nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]  # (B',)
        done = []
        for j, tok in enumerate(nxt.tolist()):
            out[live[j]].append(tok)
            if tok == eos:
                done.append(j)
        if len(done) == len(live) or step == cfg.max_new_tokens - 1:
            break
        if done and 2 * len(done) >= len(live):  # drop finished rows once they are half the batch
            keep = torch.tensor([j for j in range(len(live)) if j not in set(done)], device=device)
            live = [live[j] for j in keep.tolist()]
            cache.select(keep)
            nxt, next_pos, keys_ok = nxt[keep], next_pos[keep], keys_ok[keep]
        pos = (next_pos + step)[:, None]  # (B', 1)
        keys_ok = torch.cat([keys_ok, torch.ones(len(live), 1, dtype=torch.bool, device=device)], 1)  # (B', S')
        logits = _forward_rows(model, nxt[:, None], pos, keys_ok[:, None, None], cache)
    return [r[: r.index(eos) + 1] if eos in r else r for r in out]


def sample_responses(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    n: int,
    cfg: SamplingConfig,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> Samples:
    """``n`` sampled responses for each prompt.

    Args:
        model: an :class:`lmbricks.nn.LM` (its weights' dtype is the compute dtype).
        tokenizer: its tokenizer (EOS and padding ids; decoding).
        prompt_ids: token ids per prompt (:func:`encode_policy_prompts`).
        n: samples per prompt.
        cfg: sampling settings.
        seed: the generator's seed (same seed, same samples).
        on_batch: called with the number of sequences finished after each batch.

    Returns:
        The :class:`Samples`, in prompt order and sample order.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    rows = [list(p) for p in prompt_ids for _ in range(n)]  # (P * n) rows, prompt-major
    flat: list[list[int]] = []
    for b in range(0, len(rows), cfg.batch_size):
        flat += _sample_rows(model, rows[b : b + cfg.batch_size], cfg, gen, eos, pad)
        if on_batch is not None:
            on_batch(len(rows[b : b + cfg.batch_size]))
    responses = [flat[i * n : (i + 1) * n] for i in range(len(prompt_ids))]
    texts = [[str(tokenizer.decode(r, skip_special_tokens=True)) for r in rs] for rs in responses]
    return Samples([list(p) for p in prompt_ids], responses, texts)
