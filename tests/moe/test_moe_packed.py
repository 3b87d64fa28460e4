"""Packed bf16 inference weights (lmbricks.moe.packed): the same layer outputs as the plain path and
an fp32 reference, rebuilt when the weights change, never seen by training, state dicts or copies."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from lmbricks.moe import Experts, MoEConfig, MoELayer, build_moe
from lmbricks.moe.packed import _CACHE, packing_available

H, INTER, E = 64, 96, 4

pytestmark = pytest.mark.skipif(
    not packing_available(torch.zeros(1, dtype=torch.bfloat16)), reason="no native bf16 / oneDNN on this CPU"
)


def _layer(seed: int = 0, experts: int = E, top_k: int = 2) -> MoELayer:
    torch.manual_seed(seed)
    layer = build_moe(MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=experts, top_k=top_k))
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1.0)
    return layer.bfloat16().eval()


def _reference(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """(T, H) fp32 sum over the routed experts, written out from the layer's bf16 weights and gates."""
    ex = layer.experts
    with torch.no_grad():
        route = layer.router(x)
        y = torch.zeros(x.shape[0], H)
        for t in range(x.shape[0]):
            for j in range(route.indices.shape[1]):
                e = int(route.indices[t, j])
                g, u = (x[t].float() @ ex.gate_up[e].float()).chunk(2)  # (I,), (I,)
                y[t] += float(route.weights[t, j]) * ((F.silu(g) * u) @ ex.down[e].float())
    return y


def _run(layer: MoELayer, x: torch.Tensor, pack: bool) -> torch.Tensor:
    layer.experts.pack_inference = pack
    with torch.no_grad():
        y, _ = layer(x)
    return y.float()


def _close_to_bf16_rounding(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return bool(((a - b).abs() <= rel * b.abs() + rel * b.abs().max()).all())


@pytest.mark.parametrize("tokens", [1, 8, 300])  # one token, a decode step (1-4 rows per expert), a prefill
def test_packed_path_equals_plain_path_and_fp32_reference(tokens: int) -> None:
    layer = _layer()
    x = torch.randn(tokens, H, generator=torch.Generator().manual_seed(tokens)).bfloat16()
    packed, plain = _run(layer, x, True), _run(layer, x, False)
    assert layer.experts in _CACHE  # the packed path ran
    # both accumulate in fp32 and round once to bf16: at most one bf16 step apart
    assert _close_to_bf16_rounding(packed, plain, 2**-7)
    assert _close_to_bf16_rounding(packed, _reference(layer, x), 2**-6)


def test_fp32_layer_never_packs() -> None:
    layer = _layer().float()
    x = torch.randn(8, H)
    _run(layer, x, True)
    assert layer.experts not in _CACHE


def test_packed_copy_follows_in_place_updates_and_loads() -> None:
    layer = _layer()
    x = torch.randn(8, H, generator=torch.Generator().manual_seed(3)).bfloat16()
    before = _run(layer, x, True)
    with torch.no_grad():
        layer.experts.down.mul_(2.0)  # an optimizer step or a copy_ bumps the version counter
    after = _run(layer, x, True)
    assert _close_to_bf16_rounding(after, 2.0 * before, 2**-7)
    other = _layer(seed=5)
    layer.load_state_dict(other.state_dict())
    assert _close_to_bf16_rounding(_run(layer, x, True), _run(other, x, False), 2**-7)


def test_state_dict_copies_and_training_unchanged_by_packing() -> None:
    layer, fresh = _layer(), _layer()
    keys = {k: v.shape for k, v in layer.state_dict().items()}
    x = torch.randn(8, H).bfloat16()
    _run(layer, x, True)  # builds the packed copy
    assert {k: v.shape for k, v in layer.state_dict().items()} == keys  # on-disk format unchanged
    buf = io.BytesIO()
    torch.save(layer, buf)  # the opaque packed tensors are not on the module
    clone = copy.deepcopy(layer)
    assert clone.experts not in _CACHE
    assert torch.equal(_run(clone, x, True), _run(layer, x, True))
    for m in (layer, fresh):  # a training step after packed inference: gradients as if it never ran
        m.train()
        y, _ = m(x.clone().requires_grad_())
        y.float().square().sum().backward()
    for (name, p), q in zip(layer.named_parameters(), fresh.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None and torch.equal(p.grad, q.grad), name


def test_one_expert_packed_moe_equals_dense_ffn() -> None:
    torch.manual_seed(0)
    gate, up, down = (torch.randn(INTER, H) * 0.2, torch.randn(INTER, H) * 0.2, torch.randn(H, INTER) * 0.2)
    gate, up, down = (w.bfloat16() for w in (gate, up, down))
    config = MoEConfig(hidden_size=H, intermediate_size=INTER, num_experts=1, top_k=1)
    layer = build_moe(config)
    layer.experts = Experts.from_dense((gate, up, down), 1)
    layer = layer.bfloat16().eval()
    x = torch.randn(5, H).bfloat16()
    dense = (F.silu(x.float() @ gate.float().T) * (x.float() @ up.float().T)) @ down.float().T  # (5, H)
    assert _close_to_bf16_rounding(_run(layer, x, True), dense, 2**-6)


def test_autocast_inference_over_fp32_weights_uses_the_packed_copy() -> None:
    layer = _layer().float()  # fp32 master weights, as in training
    x = torch.randn(8, H, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        layer.experts.pack_inference = False
        plain, _ = layer(x)
        layer.experts.pack_inference = True
        packed, _ = layer(x)
    assert layer.experts in _CACHE  # built from the fp32 parameters, cast once
    assert packed.dtype == plain.dtype == torch.float32
    assert _close_to_bf16_rounding(packed, plain, 2**-7)
    for pack, cast in ((True, False), (False, True)):  # (the probe does see the plain path's cast)
        layer.experts.pack_inference = pack
        probe = _Casts()
        with probe, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x)
        assert (tuple(layer.experts.gate_up.shape) in probe.shapes) == cast, pack  # no per-call weight cast


class _Casts(TorchDispatchMode):
    """Records the shapes of the tensors that dtype casts (``_to_copy``) read, while active."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func is torch.ops.aten._to_copy.default:
            self.shapes.add(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))
