"""The ``route`` command's engine: fit the router, then route prompts (and generate) or evaluate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lmbricks.adapters.centroids import (
    CentroidSpec,
    CentroidStats,
    cached_router,
    centroid_key,
    domain_fingerprint,
)
from lmbricks.adapters.compose import compose_cat
from lmbricks.adapters.hub_adapter import AdapterSlot
from lmbricks.adapters.route import Router, mean_hidden, text_ids
from lmbricks.adapters.routing_eval import evaluate_routing
from lmbricks.adapters.session import BrickSet, load_base, load_bricks
from lmbricks.errors import ConfigError


def brick_router(
    bset: BrickSet,
    model: Any,
    tokenizer: Any,
    layer: int = -1,
    max_tokens: int = 2048,
    *,
    use_cache: bool = True,
    stats: CentroidStats | None = None,
) -> Router:
    """A router over the bricks of ``bset``: one centroid per brick from its domain's train split.

    Centroids are read from the centroid cache (:mod:`lmbricks.adapters.centroids`, keyed by the base
    and brick content hashes, the domain corpus and the settings) and computed only when missing, so
    routing a prompt costs one forward pass once each brick's centroid has been computed once.

    Args:
        bset: base model and bricks.
        model: the base model (no brick active), tokenizer: its tokenizer.
        layer: hidden layer; max_tokens: domain tokens per centroid.
        use_cache: False recomputes every centroid (and refreshes the cache).
        stats: filled with cache hits and computed centroids.
    """
    import random

    from lmbricks.checkpoint import content_hash
    from lmbricks.data import load_texts

    spec = CentroidSpec(layer=layer, max_tokens=max_tokens)
    keys: dict[str, str] = {}
    domains: dict[str, str] = {}
    about: dict[str, dict[str, Any]] = {}
    for name, info in zip(bset.names, bset.infos, strict=False):
        if info.domain is None:
            raise ConfigError(f"brick {info.name!r} records no domain: its centroid cannot be computed")
        brick_sha = content_hash(info.path)
        key = centroid_key(bset.base.sha256, brick_sha, info.domain, domain_fingerprint(info.domain), spec)
        keys[name] = key
        domains[name] = info.domain
        about[name] = {"domain": info.domain, "base_sha256": bset.base.sha256, "brick_sha256": brick_sha}

    def texts_of(name: str) -> list[str]:
        docs = [d for d in load_texts(domains[name], "train") if d.strip()]
        random.Random(spec.seed).shuffle(docs)
        return docs

    return cached_router(model, tokenizer, keys, texts_of, spec, about=about, stats=stats, refresh=not use_cache)


@torch.no_grad()
def _greedy(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.eos_token_id,
    )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def route_command(
    model_ref: str | Path,
    prompts: Sequence[str],
    bricks: Sequence[str] | None,
    *,
    top_k: int = 1,
    temperature: float = 0.1,
    layer: int = -1,
    max_new_tokens: int = 0,
    evaluate: bool = False,
    per_domain: int = 8,
    refresh_centroids: bool = False,
    status: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Route prompts (optionally generating with the routed bricks) or evaluate routing on held-out text.

    Each brick's centroid comes from the centroid cache (computed on first use, or again with
    ``refresh_centroids``); each prompt then costs one forward pass of the base to route.

    Returns:
        With ``evaluate``: ``{domain: {...}, "all": {...}}`` (see :func:`evaluate_routing`); otherwise
        ``{"prompts": [{"prompt", "bricks": [(name, weight)], "completion"?}]}``.
    """
    if not evaluate and not prompts:
        raise ConfigError("give prompts to route, or --eval")
    if any(not p.strip() for p in prompts):
        raise ConfigError("empty prompt")
    bset = load_bricks(model_ref, bricks)
    model, tokenizer = load_base(bset)
    stats = CentroidStats()
    router = brick_router(bset, model, tokenizer, layer=layer, use_cache=not refresh_centroids, stats=stats)
    status(f"router: {stats.hits} centroids from the cache, {stats.computed} computed from training text")
    slot = AdapterSlot(model, bset.rank * top_k, bset.modules)
    by_name = dict(zip(bset.names, bset.factors, strict=False))
    if evaluate:
        from lmbricks.data import load_texts

        domain_of = {n: i.domain for n, i in zip(bset.names, bset.infos, strict=False) if i.domain}
        texts = {d: [t for t in load_texts(d, "test") if t.strip()] for d in domain_of.values()}
        status(f"routing {per_domain} held-out documents per domain")
        return evaluate_routing(
            slot,
            tokenizer,
            router,
            by_name,
            domain_of,
            texts,
            per_domain=per_domain,
            top_k=top_k,
            temperature=temperature,
        )
    rows = []
    for prompt in prompts:
        slot.clear()
        h = mean_hidden(slot.model, text_ids(tokenizer, prompt, 1024), router.layer)
        choice = router.route(h, top_k=top_k, temperature=temperature)[0]
        row: dict[str, Any] = {"prompt": prompt, "bricks": choice}
        if max_new_tokens > 0:
            slot.set(compose_cat([by_name[n] for n, _ in choice], [w for _, w in choice]).pairs)
            row["completion"] = _greedy(slot.model, tokenizer, prompt, max_new_tokens)
        rows.append(row)
    slot.clear()
    return {"prompts": rows}
