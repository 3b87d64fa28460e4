"""Benchmark: proxy-tuning decoding against its floor and against decoding without KV caches.

Three models in one process: M1 = the default model (SmolLM2-135M-Instruct, 30 layers), and two
tiny models derived from it that share its vocabulary: M2 = its first 4 layers, M3 = M2 with seeded
weight noise (standing for a tuned M2). With ``--qwen`` (optional, large): M1 = Qwen2.5-Coder-1.5B,
M2 = M3 = Qwen2.5-Coder-0.5B with noise.

- proxy: ``ProxyDecoder`` (three KV caches), seconds per decoded token for a batch of prompts;
- limit: the sum of the three models' single cached decode steps (same batch, same context),
  each measured alone in the same run: proxy-tuning cannot be faster than that;
- nocache: the same decoder recomputing every sequence from scratch at each step.

After a warm-up, the three are measured in rounds (the order rotates); per-token times are medians.
Prints one JSON object: ``{"vs_limit": limit / proxy, "vs_nocache": nocache / proxy, ...}``.
``vs_limit`` near 1 means the proxy adds nothing beyond its three forward passes (target >= 0.85).
Utilisation: ``decode_bandwidth_share``, the three models' weight bytes read per decoded token over
the proxy's time per token, against the memory bandwidth bench/machine.py measures at the start.

Usage: python bench/proxy.py [--new-tokens 64] [--batch 4] [--rounds 3] [--threads 1] [--qwen]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lmbricks.proxy import DecodeConfig, Member, ProxyDecoder, encode_prompts, left_pad

CACHE = Path(__file__).resolve().parent / ".cache"
PROMPTS = [
    "The history of the printing press",
    "def quicksort(items):",
    "User: How do I bake bread?\nAssistant:",
    "Let x be a real number such that",
    "In a small village by the sea, there lived",
    "import numpy as np\n",
    "The theorem states that every",
    "Dear Sir or Madam,",
]


def derived(ref: str, layers: int, noise: float, seed: int) -> Any:
    """A model built from ``ref``: its first ``layers`` layers, weights plus seeded relative noise."""
    from lmbricks.hub import load_hf_model

    model, _ = load_hf_model(ref)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:layers]
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * noise * p.float().std())
    return model.eval()


@torch.no_grad()
def single_steps(member: Member, prompts: list[str], n: int) -> float:
    """Seconds per cached decode step of one model alone (prefill first, then ``n`` one-token steps)."""
    from transformers import DynamicCache

    ids, mask = left_pad(encode_prompts(member.tokenizer, prompts, member.chat), 0)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = member.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1)
    last = pos[:, -1]
    t0 = time.perf_counter()
    for _ in range(n):
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
        last = last + 1
        out = member.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None],
                           past_key_values=out.past_key_values, use_cache=True)  # fmt: skip
        nxt = out.logits[:, -1].argmax(-1)
    return (time.perf_counter() - t0) / n


def proxy_steps(base: Member, expert: Member, anti: Member, prompts: list[str], n: int, cache: bool) -> float:
    """Seconds per decoded token of the proxy decoder (after its prefill)."""
    dec = ProxyDecoder(base, expert, anti, DecodeConfig(max_new_tokens=n + 1, stop_at_eos=False, use_cache=cache))
    dec.start(prompts)
    t0 = time.perf_counter()
    for _ in range(n):
        dec.step()
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nocache-tokens", type=int, default=None, help="steps timed without cache (default all)")
    parser.add_argument("--qwen", action="store_true", help="use the Qwen2.5-Coder 1.5B / 0.5B pair")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared, busy CPU)")
    args = parser.parse_args()
    import lmbricks

    lmbricks.tune_process()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import measure_machine

    machine = measure_machine(min_seconds=0.2)
    from lmbricks.hub import DEFAULT_MODEL, load_hf_model

    big_ref, small_ref = (
        ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct") if args.qwen else (DEFAULT_MODEL, DEFAULT_MODEL)
    )
    m1, tok = load_hf_model(big_ref)
    small_tok = tok if small_ref == big_ref else load_hf_model(small_ref)[1]
    layers = 4 if not args.qwen else 10**6
    m2 = derived(small_ref, layers, 0.0, 0)
    m3 = derived(small_ref, layers, 0.02, 1)
    base, anti, expert = Member(m1, tok), Member(m2, small_tok), Member(m3, small_tok)
    prompts = (PROMPTS * ((args.batch + len(PROMPTS) - 1) // len(PROMPTS)))[: args.batch]
    n = args.new_tokens - 1  # the first token comes from the prefill
    n_nocache = args.nocache_tokens or n
    # warm-up
    proxy_steps(base, expert, anti, prompts, 4, True)
    for m in (base, expert, anti):
        single_steps(m, prompts, 4)
    proxy_t, limit_t, nocache_t = [], [], []
    kinds = ["proxy", "limit", "nocache"]
    for r in range(args.rounds):
        for kind in kinds[r % 3 :] + kinds[: r % 3]:
            if kind == "proxy":
                proxy_t.append(proxy_steps(base, expert, anti, prompts, n, True))
            elif kind == "limit":
                limit_t.append(sum(single_steps(m, prompts, n) for m in (base, expert, anti)))
            else:
                nocache_t.append(proxy_steps(base, expert, anti, prompts, n_nocache, False))
    proxy, limit, nocache = (statistics.median(x) for x in (proxy_t, limit_t, nocache_t))
    weight_bytes = sum(p.numel() * p.element_size() for m in (m1, m2, m3) for p in m.parameters())
    bandwidth_share = weight_bytes / proxy / (machine["bandwidth_gbs"] * 1e9)
    print(json.dumps({
        "vs_limit": round(limit / proxy, 4),
        "vs_nocache": round(nocache / proxy, 4),
        "proxy_s_per_token": proxy,
        "limit_s_per_token": limit,
        "nocache_s_per_token": nocache,
        "decode_bandwidth_share": round(bandwidth_share, 4),
        "weight_bytes_per_token": weight_bytes,
        "machine_limits": machine,
        "models": {"base": big_ref, "anti": f"{small_ref}[:{layers} layers]" if not args.qwen else small_ref,
                   "expert": "anti + noise 0.02"},
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "nocache_tokens": n_nocache + 1,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
