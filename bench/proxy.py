"""Benchmark: proxy-tuning decoding against its estimated floor and against decoding without KV caches.

Three models: M1 = the default model (SmolLM2-135M-Instruct, 30 layers), and two tiny models
derived from it that share its vocabulary: M2 = its first 4 layers, M3 = M2 with seeded weight
noise (standing for a tuned M2). With ``--qwen`` (optional, large): M1 = Qwen2.5-Coder-1.5B,
M2 = M3 = Qwen2.5-Coder-0.5B with noise.

Workloads, each in its own fresh process per round (bench/harness.py: forked from a zygote, the
order rotating every round, medians over rounds):
- ``proxy``: ``ProxyDecoder`` (three KV caches), seconds per decoded token for a batch of prompts;
- ``single_base``, ``single_expert``, ``single_anti``: one model's cached decode steps alone (same
  batch, same context). Their sum is the **estimated limit**: an estimate of the floor (three
  separately measured processes added up), not a measured one: proxy-tuning cannot be faster than
  its three forward passes, but the three processes' states differ from the proxy's one;
- ``nocache``: the same decoder recomputing every sequence from scratch at each step, over all the
  decoded tokens.

Prints one JSON object: ``vs_estimated_limit`` (estimated limit / proxy time; the old name
``vs_limit`` is kept beside it, the same number), ``vs_nocache`` (nocache / proxy). Near 1 means the
proxy adds nothing beyond its three forward passes (target >= 0.85). Utilisation:
``decode_bandwidth_share``, the three models' weight bytes read per decoded token over the proxy's
time per token, against the memory bandwidth bench/machine.py measures at the start (by the same
clock as the decoding: ``--clock``).

Usage: python bench/proxy.py [--new-tokens 64] [--batch 4] [--rounds 3] [--threads 1] [--clock wall|cpu] [--qwen]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from typing import Any

import torch

from lmbricks.proxy import DecodeConfig, Member, ProxyDecoder, encode_prompts, left_pad

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


SINGLES = {"single_base": "base", "single_expert": "expert", "single_anti": "anti"}
KINDS = ("proxy", "nocache", *SINGLES)


def refs(qwen: bool) -> tuple[str, str, int]:
    """The base model's and the small models' references, and the small models' layer count."""
    from lmbricks.hub import DEFAULT_MODEL

    if qwen:
        return "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct", 10**6
    return DEFAULT_MODEL, DEFAULT_MODEL, 4


def members(qwen: bool, which: tuple[str, ...]) -> dict[str, Member]:
    """The named members (``base``, ``expert``, ``anti``), built alike in every process."""
    from lmbricks.hub import load_hf_model

    big_ref, small_ref, layers = refs(qwen)
    out: dict[str, Member] = {}
    if "base" in which:
        m1, tok = load_hf_model(big_ref)
        out["base"] = Member(m1.eval(), tok)
    small_tok = load_hf_model(small_ref)[1] if {"expert", "anti"} & set(which) else None
    if "anti" in which:
        out["anti"] = Member(derived(small_ref, layers, 0.0, 0), small_tok)
    if "expert" in which:
        out["expert"] = Member(derived(small_ref, layers, 0.02, 1), small_tok)
    return out


@torch.no_grad()
def prefilled(member: Member, prompts: list[str]) -> Callable[[], None]:
    """Run one model's prefill on the prompts; return a closure that decodes one cached token for each."""
    from transformers import DynamicCache

    ids, mask = left_pad(encode_prompts(member.tokenizer, prompts, member.chat), 0)  # (B, T) each
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = member.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=DynamicCache(),
                       use_cache=True)  # fmt: skip
    state = {"mask": mask, "last": pos[:, -1], "nxt": out.logits[:, -1].argmax(-1), "past": out.past_key_values}

    @torch.no_grad()
    def step() -> None:
        nxt = state["nxt"]
        state["mask"] = torch.cat([state["mask"], torch.ones_like(nxt)[:, None]], dim=1)
        state["last"] = state["last"] + 1
        o = member.model(input_ids=nxt[:, None], attention_mask=state["mask"], position_ids=state["last"][:, None],
                         past_key_values=state["past"], use_cache=True)  # fmt: skip
        state["nxt"], state["past"] = o.logits[:, -1].argmax(-1), o.past_key_values

    return step


def decode_case(kind: str, new_tokens: int, batch: int, qwen: bool, threads: int | None) -> dict[str, Any]:
    """Time one workload in this (fresh) process: seconds per decoded token after the prefill.

    Args:
        kind: one of :data:`KINDS`.
        new_tokens: tokens per sequence (the first comes from the prefill; the rest are timed).
        batch: prompts decoded together.
        qwen: the Qwen pair instead of the default model.
        threads: torch threads (None: torch's choice).

    Returns:
        ``{"seconds": wall seconds per token, "cpu_seconds": process-CPU seconds per token,
        "weight_bytes": the bytes of the models this workload ran}``.
    """
    from harness import time_calls

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    which = (SINGLES[kind],) if kind in SINGLES else ("base", "expert", "anti")
    ms = members(qwen, which)
    prompts = (PROMPTS * ((batch + len(PROMPTS) - 1) // len(PROMPTS)))[:batch]
    n = new_tokens - 1  # the first token comes from the prefill
    if kind in SINGLES:
        warm = prefilled(ms[SINGLES[kind]], prompts)
        step = prefilled(ms[SINGLES[kind]], prompts)
    else:
        cfg = DecodeConfig(max_new_tokens=n + 5, stop_at_eos=False, use_cache=kind == "proxy")
        warm_dec = ProxyDecoder(ms["base"], ms["expert"], ms["anti"], cfg)
        warm_dec.start(prompts)
        warm = warm_dec.step
        dec = ProxyDecoder(ms["base"], ms["expert"], ms["anti"], cfg)
        dec.start(prompts)
        step = dec.step
    for _ in range(4):  # warm-up on a decoder of its own: the timed one starts at the same context
        warm()
    timed = time_calls(lambda: [step() for _ in range(n)], reps=1, warmup=0)
    weight_bytes = sum(p.numel() * p.element_size() for m in ms.values() for p in m.model.parameters())
    return {"seconds": timed["seconds"] / n, "cpu_seconds": timed["cpu_seconds"] / n, "weight_bytes": weight_bytes}


def proxy_vs_limit(
    new_tokens: int = 64,
    batch: int = 4,
    rounds: int = 3,
    qwen: bool = False,
    threads: int | None = None,
    clock: str = "wall",
) -> dict[str, Any]:
    """Measure the proxy decoder against its estimated limit and against no caches, fresh processes.

    Args:
        new_tokens: tokens decoded per sequence.
        batch: prompts decoded together.
        rounds: processes per workload.
        qwen: the Qwen2.5-Coder 1.5B / 0.5B pair instead of the default model.
        threads: torch threads in the workers (None: torch's choice).
        clock: ``"wall"`` or ``"cpu"`` (each process's CPU time; one thread on a loaded machine).

    Returns:
        The JSON-able result (see the module docstring).
    """
    from harness import CLOCKS, Workload, alternate, medians
    from machine import measure_machine

    if threads:
        torch.set_num_threads(threads)
    machine = measure_machine(min_seconds=0.2, clock=clock)
    args = {"new_tokens": new_tokens, "batch": batch, "qwen": qwen, "threads": threads}
    runs = alternate({k: Workload(__file__, "decode_case", {**args, "kind": k}) for k in KINDS}, rounds)
    med = medians(runs, CLOCKS[clock])
    proxy, nocache = med["proxy"], med["nocache"]
    limit = sum(med[k] for k in SINGLES)
    weight_bytes = runs["proxy"][0]["weight_bytes"]
    big_ref, small_ref, layers = refs(qwen)
    return {
        "vs_estimated_limit": round(limit / proxy, 4),
        "vs_limit": round(limit / proxy, 4),  # the old name of vs_estimated_limit
        "vs_nocache": round(nocache / proxy, 4),
        "proxy_s_per_token": proxy,
        "estimated_limit_s_per_token": limit,
        "limit_s_per_token": limit,  # the old name
        "limit_note": "estimated: the sum of the three models' cached decode steps, each timed alone "
        "in its own process (medians), not a measured floor",
        "single_s_per_token": {k: med[k] for k in SINGLES},
        "nocache_s_per_token": nocache,
        "decode_bandwidth_share": round(weight_bytes / proxy / (machine["bandwidth_gbs"] * 1e9), 4),
        "weight_bytes_per_token": weight_bytes,
        "machine_limits": machine,
        "models": {
            "base": big_ref,
            "anti": small_ref if qwen else f"{small_ref}[:{layers} layers]",
            "expert": "anti + noise 0.02",
        },  # fmt: skip
        "batch": batch,
        "new_tokens": new_tokens,
        "nocache_tokens": new_tokens,
        "rounds": rounds,
        "clock": clock,
        "threads": threads or torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lmbricks

    lmbricks.tune_process()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per workload")
    parser.add_argument("--qwen", action="store_true", help="use the Qwen2.5-Coder 1.5B / 0.5B pair")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared, busy CPU)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: for a loaded machine, 1 thread")
    args = parser.parse_args(argv)
    result = proxy_vs_limit(args.new_tokens, args.batch, args.rounds, args.qwen, args.threads, args.clock)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
