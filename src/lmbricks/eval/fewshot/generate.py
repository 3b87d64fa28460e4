"""Batched greedy generation with stop strings, for any Hugging Face causal LM.

Prompts are sorted by length and left-padded in batches (so similar lengths share a batch);
``transformers``' ``stop_strings`` ends each sequence at the first stop string, and the returned
text is cut there too (a batch runs until its last sequence stops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    end = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            end = min(end, i)
    return text[:end]


@torch.no_grad()
def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    stops: Sequence[str],
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (in their order), each cut at the first stop string.

    Args:
        model: a transformers causal LM (eval mode).
        tokenizer: its tokenizer.
        prompts: prompt texts (special tokens as text; encoded without adding any).
        max_new_tokens: generation budget per prompt.
        stops: stop strings (the tokenizer's end-of-sequence token always stops too).
        batch_size: prompts per forward.
        on_batch: called with the number of prompts done after each batch.

    Returns:
        The generated texts, special tokens removed.
    """
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = [tokenizer(prompts[i], add_special_tokens=False)["input_ids"] for i in idx]
        width = max(len(e) for e in enc)
        ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in enc], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=device)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id, eos_token_id=eos
        )
        if stops:
            kwargs.update(stop_strings=list(stops), tokenizer=tokenizer)
        gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, width:]
        for row, i in zip(gen, idx, strict=True):
            text = tokenizer.decode(row, skip_special_tokens=True)
            out[i] = cut_at_stops(text, stops).strip()
        if on_batch is not None:
            on_batch(len(idx))
    return out


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token sequences."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


class _BatchCache:
    """A preallocated KV cache for a batch that shares one prefix (the demonstrations).

    Same interface as :class:`lmbricks.nn.model.KVCache` for the attention layers (``update``), but
    keys are written in place into (B, n_kv, capacity, hd) buffers, so a decoding step does not copy
    the whole cache as ``torch.cat`` would.
    """

    def __init__(self, prefix_keys: list[Tensor | None], prefix_values: list[Tensor | None],
                 batch: int, capacity: int, shape: tuple[int, int], dtype: torch.dtype,
                 device: torch.device) -> None:  # fmt: skip
        n_kv, hd = shape
        self.keys, self.values, self.lengths = [], [], []
        for pk, pv in zip(prefix_keys, prefix_values, strict=True):
            k = torch.empty(batch, n_kv, capacity, hd, dtype=dtype, device=device)
            v = torch.empty_like(k)
            s = 0 if pk is None or pv is None else pk.shape[2]
            if s:
                assert pk is not None and pv is not None
                k[:, :, :s] = pk  # (1, n_kv, S, hd) broadcast over the batch
                v[:, :, :s] = pv
            self.keys.append(k)
            self.values.append(v)
            self.lengths.append(s)

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` (indices), e.g. once the others have stopped."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write this step's k, v (B, n_kv, T, hd); return the filled part (B, n_kv, S + T, hd)."""
        s, t = self.lengths[layer], k.shape[2]
        self.keys[layer][:, :, s : s + t] = k
        self.values[layer][:, :, s : s + t] = v
        self.lengths[layer] = s + t
        return self.keys[layer][:, :, : s + t], self.values[layer][:, :, : s + t]


def _prefill(model: Any, ids: Tensor, cache: Any) -> None:
    """Fill ``cache`` with the keys and values of ``ids`` (1, S); no logits (the prefix needs none)."""
    from lmbricks.nn.model import LayerInputs, attention_mask, rope_cos_sin

    x = model.embed(ids)  # (1, S, H)
    cos, sin = rope_cos_sin(torch.arange(ids.shape[1], device=ids.device), model.cfg.head_dim,
                            model.cfg.rope_theta, x.dtype)  # fmt: skip
    inputs = LayerInputs(cos, sin, *attention_mask(ids.shape[1], 0, model.cfg.sliding_window, ids.device), cache)
    for block in model.layers:
        x, _ = block(x, inputs)


def _forward_rows(model: Any, ids: Tensor, positions: Tensor, mask: Tensor, cache: _BatchCache) -> Tensor:
    """Last-position logits of ``ids`` (B, T) at ``positions`` (B, T) under ``mask`` (B, 1, T, S + T)."""
    from lmbricks.nn.model import LayerInputs, rope_cos_sin

    x = model.embed(ids)  # (B, T, H)
    cos, sin = rope_cos_sin(positions, model.cfg.head_dim, model.cfg.rope_theta, x.dtype)
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hd)
    inputs = LayerInputs(cos, sin, mask, False, cache)
    for block in model.layers:
        x, _ = block(x, inputs)
    return model.lm_head(model.norm(x[:, -1]))  # (B, V)


def _rest_layout(
    rests: Sequence[Sequence[int]], shared: int, pad: int, window: int | None, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The first forward of a batch of rests after an S-token shared prefix, rests left-padded to L.

    Returns:
        ``(ids (B, L), positions (B, L), mask (B, L, S + L), keys_ok (B, S + L), k_pos (B, S + L))``:
        pads reuse the first position and are masked out as keys; ``keys_ok`` and ``k_pos`` (key
        positions) grow by one column per decoded token.
    """
    B, L = len(rests), max(len(r) for r in rests)
    ids = torch.tensor([[pad] * (L - len(r)) + list(r) for r in rests], device=device)  # (B, L)
    real = torch.tensor([[False] * (L - len(r)) + [True] * len(r) for r in rests], device=device)  # (B, L)
    positions = shared + (real.long().cumsum(1) - 1).clamp_min(0)  # (B, L): pads reuse the first slot
    keys_ok = torch.cat([torch.ones(B, shared, dtype=torch.bool, device=device), real], 1)  # (B, S + L)
    q_idx = torch.arange(shared, shared + L, device=device)[:, None]  # (L, 1)
    k_idx = torch.arange(shared + L, device=device)[None, :]  # (1, S + L)
    # causal, real keys only; a padding query also sees itself so its row is never empty (no NaN)
    mask = (k_idx <= q_idx)[None] & (keys_ok[:, None, :] | (k_idx == q_idx)[None])  # (B, L, S + L)
    k_pos = torch.cat([torch.arange(shared, device=device).expand(B, shared), positions], 1)  # (B, S + L)
    if window is not None:  # Mistral-style: a query sees keys less than `window` positions back
        mask &= (k_pos[:, None, :] > positions[:, :, None] - window) | (k_idx == q_idx)[None]
    return ids, positions, mask, keys_ok, k_pos


def _decode_batch(
    model: Any,
    tokenizer: Any,
    rests: Sequence[Sequence[int]],
    prefix: Any,
    shared: int,
    max_new_tokens: int,
    stops: Sequence[str],
    stop_ids: set[int],
) -> list[str]:
    """Greedy continuations of prompts ``prefix + rest`` for a batch of rests (each >= 1 token).

    Layout of row i: the shared prefix (S tokens), then its rest left-padded to the longest rest,
    then the generated tokens. Padding is masked out as a key and skipped in the positions, so each
    row is computed as if it were alone (up to float rounding of the batched matmuls).
    """
    device = next(model.parameters()).device
    B, L = len(rests), max(len(r) for r in rests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    window = model.cfg.sliding_window
    ids, positions, mask, keys_ok, k_pos = _rest_layout(rests, shared, pad, window, device)
    dtype = model.embed.weight.dtype
    cache = _BatchCache(prefix.keys, prefix.values, B, shared + L + max_new_tokens,
                        (model.cfg.num_kv_heads, model.cfg.head_dim), dtype, device)  # fmt: skip
    logits = _forward_rows(model, ids, positions, mask[:, None], cache)
    next_pos = shared + torch.tensor([len(r) for r in rests], device=device)  # (B,)
    new: list[list[int]] = [[] for _ in rests]
    texts = [""] * B
    done = [False] * B
    rows = list(range(B))  # the original row of each batch row still decoding
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)  # (B',)
        for j, tok in enumerate(nxt.tolist()):
            i = rows[j]
            if done[i]:
                continue
            if tok in stop_ids:
                done[i] = True
                continue
            new[i].append(tok)
            texts[i] = tokenizer.decode(new[i], skip_special_tokens=True)
            done[i] = any(s in texts[i] for s in stops)
        if all(done) or step == max_new_tokens - 1:
            break
        finished = [j for j, i in enumerate(rows) if done[i]]
        if 2 * len(finished) >= len(rows):  # drop finished rows once they are half the batch
            keep = torch.tensor([j for j, i in enumerate(rows) if not done[i]], device=device)
            rows = [rows[j] for j in keep.tolist()]
            cache.select(keep)
            nxt, next_pos, keys_ok, k_pos = nxt[keep], next_pos[keep], keys_ok[keep], k_pos[keep]
        pos = (next_pos + step)[:, None]  # (B', 1)
        keys_ok = torch.cat([keys_ok, torch.ones(len(rows), 1, dtype=torch.bool, device=device)], 1)  # (B', S')
        k_pos = torch.cat([k_pos, pos], 1)  # (B', S')
        step_mask = keys_ok if window is None else keys_ok & (k_pos > pos - window)
        logits = _forward_rows(model, nxt[:, None], pos, step_mask[:, None, None], cache)
    return [cut_at_stops(t, stops).strip() for t in texts]


@torch.no_grad()
def generate_cached(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    stops: Sequence[str],
    on_item: Callable[[int], None] | None = None,
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations for :class:`lmbricks.nn.LM`, reusing the KV cache of the shared prefix.

    Few-shot prompts of one condition share their demonstrations; the longest common token prefix
    of all prompts is computed once, and each prompt then only runs its own remainder (so an
    8-shot prompt costs about as much as a 0-shot one). The remainders are decoded in batches of
    ``batch_size`` (sorted by length, left-padded after the prefix, padding masked and skipped in
    the rotary positions), each row stopping at the end-of-sequence token or once its text contains
    a stop string. The results equal greedy decoding of each prompt alone up to float rounding.

    Args:
        model: an :class:`lmbricks.nn.LM` (eval mode).
        tokenizer: its tokenizer.
        prompts: prompt texts (encoded without adding special tokens).
        max_new_tokens: generation budget per prompt.
        stops: stop strings.
        on_item: called with the number of prompts done after each batch.
        batch_size: prompts decoded together.

    Returns:
        The generated texts (special tokens removed), cut at the first stop string, in prompt order.
    """
    from lmbricks.nn.model import KVCache

    if not prompts:
        return []
    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = common_prefix_length(enc)
    shared = min(shared, min(len(e) for e in enc) - 1)  # every prompt keeps >= 1 own token
    device = next(model.parameters()).device
    prefix = KVCache(model.cfg.num_layers)
    if shared > 0:
        _prefill(model, torch.tensor([enc[0][:shared]], device=device), prefix)  # (1, n_kv, S, hd) per layer
    stop_ids = {tokenizer.eos_token_id} | {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",)}
    stop_ids.discard(None)
    stop_ids.discard(getattr(tokenizer, "unk_token_id", None))
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # similar lengths share a batch
    out = [""] * len(enc)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        texts = _decode_batch(
            model, tokenizer, [enc[i][shared:] for i in idx], prefix, shared, max_new_tokens, stops, stop_ids
        )
        for i, t in zip(idx, texts, strict=True):
            out[i] = t
        if on_item is not None:
            on_item(len(idx))
    return out
