"""Tiny Mixtral checkpoints with planted routing: a router biased per domain, and domain texts.

The biased model gives every token that occurs in only one domain's texts an embedding along one
hidden direction per domain (hidden unit d for domain d) and sets each layer's router row e to read
hidden unit e, so the tokens of domain d go to expert d as first choice at every layer. Tokens shared
between domains keep a small random embedding and are routed by the random rest of the network.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from lmbricks.testing import build_tiny_tokenizer, tiny_mixtral_config

# words of the tiny tokenizer's training text, grouped into four "domains"
DOMAIN_WORDS = {
    "fable": ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog."],
    "code": ["def", "main():", "return", "1", "+", "2", "*", "x", "x^2", "-", "="],
    "novel": [
        "Emma",
        "Woodhouse,",
        "handsome,",
        "clever,",
        "and",
        "rich,",
        "with",
        "a",
        "comfortable",
        "home.",
    ],
    "chat": ["User:", "hello", "there", "Assistant:", "hi,", "how", "are", "you?", "Bonjour", "le", "monde."],
}


def make_texts(docs_per_domain: int = 20, words: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """Random word sequences from each domain's word list (deterministic)."""
    rng = random.Random(seed)
    return {
        d: [" ".join(rng.choice(ws) for _ in range(words)) for _ in range(docs_per_domain)]
        for d, ws in DOMAIN_WORDS.items()
    }


def exclusive_tokens(tokenizer: object, texts: dict[str, list[str]]) -> dict[str, set[int]]:
    """Token ids that occur in exactly one domain's texts."""
    seen = {
        d: {i for t in ts for i in tokenizer(t, add_special_tokens=False)["input_ids"]}  # type: ignore[operator]
        for d, ts in texts.items()
    }
    return {d: s - set().union(*(o for e, o in seen.items() if e != d)) for d, s in seen.items()}


def save_biased_mixtral(out: Path, texts: dict[str, list[str]], scale: float = 3.0, seed: int = 0) -> Path:
    """A tiny Mixtral (4 experts, top-2) whose routers send domain d's exclusive tokens to expert d."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = build_tiny_tokenizer(384)
    model = AutoModelForCausalLM.from_config(tiny_mixtral_config(), dtype=torch.float32)
    excl = exclusive_tokens(tok, texts)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight  # (V, H)
        emb[:, : len(excl)] = 0.0
        for d, ids in enumerate(excl.values()):
            emb[sorted(ids), d] = scale
        for layer in model.model.layers:
            w = layer.mlp.gate.weight  # (E, H)
            w.zero_()
            for e in range(w.shape[0]):
                w[e, e] = 20.0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
