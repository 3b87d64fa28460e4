"""Held-out evaluation of an instruction-tuned model: response-only loss and greedy generations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lmbricks.nn.model import LM, lm_loss
from lmbricks.sft.schema import Example
from lmbricks.sft.template import render_chat


@torch.no_grad()
def response_loss(model: LM, blocks: Tensor, batch_size: int = 4) -> float:
    """Mean cross-entropy over the response tokens of packed (N, 3, T) blocks (token-weighted).

    Returns:
        The loss in nats per response token (nan when there is none).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        ids, labels, docs = blocks[i : i + batch_size].to(device).unbind(1)  # each (b, T)
        logits = model(ids, doc_ids=docs).logits
        n = int((labels[:, 1:] != -100).sum())
        if n:
            total += float(lm_loss(logits, ids, labels)) * n
            count += n
    model.train(was_training)
    return total / count if count else float("nan")


@torch.no_grad()
def generate_replies(
    model: LM, tokenizer: Any, prompts: Sequence[Example], max_new_tokens: int = 64
) -> list[dict[str, str]]:
    """Greedy replies to the prompt part of each example (KV cache, stops at end of sequence).

    Returns:
        ``{"prompt", "reference", "generated"}`` per example.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos = _stop_id(tokenizer)
    out = []
    for ex in prompts:
        text = render_chat(tokenizer, ex.prompt_messages, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=device)
        gen = model.generate(ids, max_new_tokens, eos_token_id=eos)[0, ids.shape[1] :]
        reply = tokenizer.decode(gen, skip_special_tokens=True).strip()
        out.append({"prompt": ex.prompt_messages[-1]["content"], "reference": ex.final_response, "generated": reply})
    model.train(was_training)
    return out


def _stop_id(tokenizer: Any) -> int | None:
    """``<|im_end|>`` when the vocabulary has it (ChatML turns end there), else the EOS id."""
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        return int(vocab["<|im_end|>"])
    eos = getattr(tokenizer, "eos_token_id", None)
    return int(eos) if eos is not None else None
