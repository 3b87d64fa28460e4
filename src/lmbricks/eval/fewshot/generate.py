"""Batched greedy generation with stop strings, for any Hugging Face causal LM.

Prompts are sorted by length and left-padded in batches (so similar lengths share a batch);
``transformers``' ``stop_strings`` ends each sequence at the first stop string, and the returned
text is cut there too (a batch runs until its last sequence stops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


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


@torch.no_grad()
def generate_cached(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    stops: Sequence[str],
    on_item: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuations for :class:`lmbricks.nn.LM`, reusing the KV cache of the shared prefix.

    Few-shot prompts of one condition share their demonstrations; the longest common token prefix
    of all prompts is computed once, and each prompt then only runs its own remainder (so an
    8-shot prompt costs about as much as a 0-shot one). Each continuation stops at the
    end-of-sequence token or once its text contains a stop string. The results equal uncached
    greedy decoding of each prompt (same tokens, same order of operations up to float rounding).

    Returns:
        The generated texts (special tokens removed), cut at the first stop string.
    """
    from lmbricks.nn.model import KVCache

    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = common_prefix_length(enc)
    shared = min(shared, min(len(e) for e in enc) - 1) if enc else 0  # every prompt keeps >= 1 own token
    device = next(model.parameters()).device
    n_layers = model.cfg.num_layers
    prefix = KVCache(n_layers)
    if shared > 0:
        model(torch.tensor([enc[0][:shared]], device=device), cache=prefix)
    stop_ids = {tokenizer.eos_token_id} | {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",)}
    stop_ids.discard(None)
    stop_ids.discard(getattr(tokenizer, "unk_token_id", None))
    out = []
    for ids in enc:
        cache = KVCache(n_layers)
        cache.keys, cache.values = list(prefix.keys), list(prefix.values)  # update() never mutates them
        logits = model(torch.tensor([ids[shared:]], device=device), cache=cache).logits[0, -1]
        new: list[int] = []
        text = ""
        for _ in range(max_new_tokens):
            nxt = int(logits.argmax())
            if nxt in stop_ids:
                break
            new.append(nxt)
            text = tokenizer.decode(new, skip_special_tokens=True)
            if any(s in text for s in stops):
                break
            logits = model(torch.tensor([[nxt]], device=device), cache=cache).logits[0, -1]
        out.append(cut_at_stops(text, stops).strip())
        if on_item is not None:
            on_item(1)
    return out
