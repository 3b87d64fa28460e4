"""Benchmark ``train_vs_hf``: training-step tokens/s of lmbricks.nn.LM versus transformers' Llama.

Same configuration and the same weights (HF weights loaded into the reference LM); one training
step = forward, next-token cross-entropy, backward, AdamW step. Both models run in one process,
alternating after warm-up (the order flips every round); medians are compared. fp32 on CPU,
bf16 autocast on CUDA. Model: hidden 512, 4 layers, 8 heads (4 KV), SwiGLU 1376, vocab 8192,
batch 8 x 256 tokens (``--quick``: hidden 128, 2 layers, batch 4 x 128).

Prints one JSON object: {"train_vs_hf": ratio (> 1 means lmbricks is faster), ...}.
``bench/moe.py`` may import :func:`train_vs_hf` and merge its result.

Usage: python bench/train_lm.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch


def _configs(quick: bool) -> tuple[dict[str, int], int, int]:
    if quick:
        return (
            dict(
                vocab_size=4096,
                hidden_size=128,
                intermediate_size=352,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            ),
            4,
            128,
        )
    return (
        dict(
            vocab_size=8192,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=4,
        ),
        8,
        256,
    )


def train_vs_hf(quick: bool = False, rounds: int = 7, device: str = "auto") -> dict[str, Any]:
    """Measure tokens/s of one training step for both models; returns the JSON-able result."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmbricks.nn import LM, config_from_hf, hf_state_dict, load_hf_weights

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    shape, batch, seq = _configs(quick)
    torch.manual_seed(0)
    hf_cfg = LlamaConfig(**shape, max_position_embeddings=seq, tie_word_embeddings=False)
    hf_cfg._attn_implementation = "sdpa"
    hf = LlamaForCausalLM(hf_cfg).to(dev).train()
    ours = LM(config_from_hf(hf_cfg.to_dict()))
    sd = hf.state_dict()
    load_hf_weights(ours, sd.__getitem__, set(sd), "llama")
    ours = ours.to(dev).train()
    assert set(hf_state_dict(ours, "llama")) == set(sd)  # the same parameters, fused differently
    ids = torch.randint(0, shape["vocab_size"], (batch, seq), device=dev)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else nullcontext

    def step_hf(opt: torch.optim.Optimizer) -> None:
        with amp():
            loss = hf(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def step_ours(opt: torch.optim.Optimizer) -> None:
        with amp():
            loss = ours.loss(ids).loss  # the training API, as labels= is transformers' (fused head + loss)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    runs = {
        "lmbricks": (step_ours, torch.optim.AdamW(ours.parameters(), lr=1e-4)),
        "hf": (step_hf, torch.optim.AdamW(hf.parameters(), lr=1e-4)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn, opt in runs.values():  # warm-up
        for _ in range(2):
            fn(opt)
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            fn, opt = runs[name]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(opt)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    tokens = batch * seq
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "train_vs_hf": round(med["hf"] / med["lmbricks"], 3),
        "lmbricks_tokens_per_s": round(tokens / med["lmbricks"], 1),
        "hf_tokens_per_s": round(tokens / med["hf"], 1),
        "model": shape,
        "batch": [batch, seq],
        "rounds": rounds,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "dtype": "bf16 autocast" if dev.type == "cuda" else "fp32",
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small model, for smoke tests")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print(json.dumps(train_vs_hf(args.quick, args.rounds, args.device), indent=2))


if __name__ == "__main__":
    main()
