"""MoE checks added for per-test mutation coverage (tests/MUTATIONS.md, scripts/mutation_coverage.py)."""

from __future__ import annotations

import torch

from lmbricks.moe import MoEConfig, build_moe


def test_router_logits_of_a_bf16_input_are_fp32_under_autocast() -> None:
    """Inside a model under autocast the layer's input is often bf16 already: the router still
    computes its logits in fp32, equal to the fp32 product of the (exactly widened) bf16 input."""
    torch.manual_seed(0)
    layer = build_moe(MoEConfig(hidden_size=64, intermediate_size=96, num_experts=4, top_k=2))
    x = torch.randn(8, 64).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer.router.logits(x)  # (8, 4)
    assert logits.dtype == torch.float32
    want = x.float() @ layer.router.gate.weight.float().T  # (8, 4)
    torch.testing.assert_close(logits, want, rtol=1e-6, atol=1e-6)
