"""An MoE layer inside a bf16 autocast region: it runs, gives fp32 master weights their gradients,
keeps the router in fp32, and stays within bf16 rounding of the fp32 layer (every dispatch path)."""

from __future__ import annotations

import pytest
import torch

from lmbricks.moe import MoEConfig, build_moe

H, INTER = 64, 96


def _layer(impl: str) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = build_moe(MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=4, top_k=2)).float()
    layer.experts.impl = impl
    return layer


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("impl", ["loop", "grouped"])
def test_bf16_autocast_trains_within_rounding_of_fp32(impl: str) -> None:
    x = torch.randn(48, H, generator=torch.Generator().manual_seed(1))
    ref, amp = _layer(impl), _layer(impl)
    y_ref, _ = ref(x)
    y_ref.square().mean().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # inside a model the layer's input is often bf16 already (an autocast matmul made it)
        y, _ = amp(x.bfloat16())
    assert y.dtype == torch.bfloat16  # the layer returns its input's dtype
    y.square().mean().backward()
    assert _rel(y, y_ref) < 2e-2  # bf16 operands, fp32 accumulation
    for (name, p), p_ref in zip(amp.named_parameters(), ref.parameters(), strict=True):
        assert p.dtype == torch.float32, name  # master weights stay fp32
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert _rel(p.grad, p_ref.grad) < 5e-2, name


@pytest.mark.parametrize("impl", ["loop", "grouped"])
def test_bf16_autocast_inference(impl: str) -> None:
    x = torch.randn(16, H, generator=torch.Generator().manual_seed(2))
    layer = _layer(impl)
    with torch.no_grad():
        y_ref, _ = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = layer(x)
            y16, _ = layer(x.bfloat16())
    assert _rel(y, y_ref) < 2e-2 and _rel(y16, y_ref) < 2e-2


def test_router_logits_stay_fp32_under_autocast() -> None:
    layer = _layer("loop")
    x = torch.randn(8, H)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer.router.logits(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, layer.router.logits(x), rtol=0, atol=0)
